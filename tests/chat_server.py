"""A local server that speaks the OpenAI chat-completions protocol and answers from a transformers VLM.

The endpoint backend is tested against it exactly as it would talk to vLLM or NIM: frames arrive as
JPEG data URIs, ``n`` trials come back as choices. ``fail_next`` makes the next requests answer 503,
and ``hang`` makes it accept and never answer, to test retries and timeouts.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from cosmos_assets.models.vlm import GenerationSettings, VideoPrompt


class ChatCompletionsServer:
    def __init__(self, vlm, assumed_fps: float = 2.0):
        self.vlm, self.assumed_fps = vlm, assumed_fps
        self.requests: list[dict] = []
        self.fail_next = 0
        self.hang = False
        self._released = threading.Event()
        self.cap_n: int | None = None  # answer at most this many choices, as some servers do
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                if self.path != "/v1/chat/completions":
                    return self._reply(404, {"error": {"message": f"no route {self.path}"}})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"body": body, "authorization": self.headers.get("Authorization")})
                if server.hang:
                    server._released.wait(30)
                    return
                if server.fail_next > 0:
                    server.fail_next -= 1
                    return self._reply(503, {"error": {"message": "overloaded"}})
                self._reply(200, server.answer(body))

            def _reply(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, body: dict) -> dict:
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), None)
        user = next(m for m in body["messages"] if m["role"] == "user")
        frames, question = [], ""
        for part in user["content"]:
            if part["type"] == "image_url":
                encoded = part["image_url"]["url"].split(",", 1)[1]
                frames.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB")))
            elif part["type"] == "text":
                question += part["text"]
        n = body.get("n", 1) if self.cap_n is None else min(body.get("n", 1), self.cap_n)
        settings = GenerationSettings(temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0),
                                      max_new_tokens=body.get("max_tokens", 16), trials=n, seed=body.get("seed", 0),
                                      repetition_penalty=body.get("repetition_penalty", 1.0))
        [texts] = self.vlm.generate([VideoPrompt(np.stack(frames), self.assumed_fps, question, system)], settings)
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "length"}
                        for i, t in enumerate(texts)],
        }

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
