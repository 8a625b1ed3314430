"""Prompt alignment: a vision-language model asked, for each evaluation video, whether it shows what its prompt
asked for. The answer is parsed as the Reason critic parses its verdicts (``<answer>Yes</answer>``), and a
video's alignment is the share of its parsed trials answering Yes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cosmos_assets.common.drop_zone import error_class
from cosmos_assets.common.knobs import knob
from cosmos_assets.models.vlm import GenerationSettings, VideoPrompt
from cosmos_assets.synthetic.critics import parse_verdict

ALIGNMENT_SYSTEM_PROMPT = (
    "You are a careful reviewer of generated videos. Watch the video, reason briefly about what it shows inside "
    "<think></think>, then give your verdict inside <answer></answer>: Yes or No."
)
ALIGNMENT_QUESTION = 'Does this video show what this description asks for? Description: "{prompt}"'


@dataclass(frozen=True)
class AlignmentSettings:
    trials: int = knob(1, "Answers per video (the share answering Yes is its alignment).")
    max_new_tokens: int = knob(256, "Most tokens per answer (reasoning and verdict).")
    temperature: float = knob(0.0, "Sampling temperature; 0 decodes greedily (one trial is then enough).")

    def generation(self) -> GenerationSettings:
        return GenerationSettings(temperature=self.temperature, max_new_tokens=self.max_new_tokens, trials=self.trials,
                                  repetition_penalty=1.0)


@dataclass(frozen=True)
class EvaluationVideo:
    """One generated evaluation video: which model made it, from which prompt and seed."""

    model: str  # "base" / "fine-tuned"
    prompt: str
    clip_id: str
    seed: int
    frames: np.ndarray  # uint8 T x H x W x 3
    fps: float


def alignment_prompt(prompt: str, frames: np.ndarray, fps: float) -> VideoPrompt:
    return VideoPrompt(frames, fps, ALIGNMENT_QUESTION.format(prompt=prompt), ALIGNMENT_SYSTEM_PROMPT)


def prompt_alignment(vlm, videos: Sequence[EvaluationVideo], settings: AlignmentSettings = AlignmentSettings()) -> list[dict]:
    """One row per video: its alignment (share of parsed trials answering Yes; null when none parsed), the answers,
    parse failures, and the VLM's identity. The videos go to the VLM as one batch; should the batch fail, each is
    asked alone, so a video the VLM fails on gets the error class and message in its row and the others go on."""
    identity = vlm.identity
    prompts = [alignment_prompt(v.prompt, v.frames, v.fps) for v in videos]
    try:
        answers: list = vlm.generate(prompts, settings.generation())
    except Exception:  # noqa: BLE001 - find the video that fails by asking one at a time
        answers = []
        for prompt in prompts:
            try:
                answers.append(vlm.generate([prompt], settings.generation())[0])
            except Exception as error:  # noqa: BLE001 - recorded in the video's row
                answers.append(error)
    rows = []
    for video, texts in zip(videos, answers):
        row = {"model": video.model, "prompt": video.prompt, "clip_id": video.clip_id, "seed": video.seed,
               "vlm": identity["model"], "vlm_version": identity["model_version"],
               "random_weights": bool(identity["tiny_random"]), "alignment": None, "answers": "", "parsed": 0,
               "parse_failures": 0, "error": None}
        if isinstance(texts, Exception):
            rows.append({**row, "error": f"{error_class(texts)}: {texts}"})
            continue
        trials = [parse_verdict(text) for text in texts]
        verdicts = [t.answer for t in trials if t.parsed]
        rows.append({**row, "alignment": round(verdicts.count("Yes") / len(verdicts), 6) if verdicts else None,
                     "answers": ", ".join(t.answer if t.parsed else f"unparsed ({t.problem})" for t in trials),
                     "parsed": len(verdicts), "parse_failures": len(trials) - len(verdicts)})
    return rows


def alignment_by_prompt(rows: list[dict], models: Sequence[str] = ("base", "fine-tuned")) -> list[dict]:
    """The per-prompt table: each prompt's mean alignment (over its seeds) for every model, and a last row with
    each model's mean over all videos. Null where no answer of that model parsed."""
    def mean(selected: list[dict]) -> float | None:
        values = [r["alignment"] for r in selected if r["alignment"] is not None]
        return round(float(np.mean(values)), 6) if values else None

    table = []
    for prompt in dict.fromkeys(r["prompt"] for r in rows):
        of_prompt = [r for r in rows if r["prompt"] == prompt]
        table.append({"prompt": prompt, **{model: mean([r for r in of_prompt if r["model"] == model]) for model in models},
                      "videos": len(of_prompt), "parse_failures": sum(r["parse_failures"] for r in of_prompt),
                      "errors": sum(r["error"] is not None for r in of_prompt)})
    table.append({"prompt": "mean (all prompts)", **{model: mean([r for r in rows if r["model"] == model]) for model in models},
                  "videos": len(rows), "parse_failures": sum(r["parse_failures"] for r in rows),
                  "errors": sum(r["error"] is not None for r in rows)})
    return table
