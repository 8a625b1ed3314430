"""Candidates: N videos per generation request, from the configured backend, written once.

Backends:

- ``ClassicalBackend`` (the ``local`` profile): the source window with the condition rendered over it
  (``augment``), parameters drawn from the seed;
- ``DiffusersBackend``: a loaded Cosmos generator (``cosmos_assets.models.generator``): Transfer 2.5 with
  the request's control video and prompt, Predict2 / 2.5 Video2World conditioned on the source window's frames.

A candidate's id is a UUID5 of its request, seed and the backend's configuration, and its files are named
by that id: the video (H.264 MP4), a thumbnail, and a JSON record of everything that made it. Each is published
to the artefact store whole (``common.artefacts``), the record last, so a candidate whose record exists is
complete: a re-run after a crash reuses finished candidates and redoes only the rest, with no duplicates.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np

from cosmos_assets.common.artefacts import ArtefactStore
from cosmos_assets.common.files import sha256_of_file, stable_id
from cosmos_assets.models.checkpoints import TINY_LABEL
from cosmos_assets.models.catalog import PIPELINE_CLASSES, TRANSFER25
from cosmos_assets.synthetic.augment import CLASSICAL_GENERATOR, CLASSICAL_VERSION, augment
from cosmos_assets.synthetic.video import Geometry, control_video, middle_frame, write_jpeg, write_mp4

BACKENDS = ("classical", "generator")


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ClassicalBackend:
    """Weather and lighting rendered over the source clip on the CPU (real frames, not a model)."""

    def identity(self) -> dict:
        return {"backend": "classical", "generator": CLASSICAL_GENERATOR, "model": CLASSICAL_GENERATOR,
                "model_version": CLASSICAL_VERSION, "checkpoint": None, "tiny_random": False, "label": ""}

    def config_digest(self) -> str:
        return _digest(self.identity())

    def generate(self, request: dict, seed: int, source: np.ndarray, stored=None) -> tuple[np.ndarray, dict]:
        frames, params = augment(source, request["condition"], seed, request["fps"])
        return frames, {"augmentation": request["condition"], "parameters": params, "seed": seed,
                        "num_frames": len(frames), "width": frames.shape[2], "height": frames.shape[1], "fps": request["fps"]}


class DiffusersBackend:
    """A Cosmos world model through diffusers: Transfer 2.5 with a control video, or Predict Video2World."""

    def __init__(self, generator):
        self.generator = generator

    def identity(self) -> dict:
        checkpoint = self.generator.checkpoint
        return {"backend": self.generator.kind, "generator": PIPELINE_CLASSES[self.generator.kind],
                "model": checkpoint.name, "model_version": checkpoint.version, "checkpoint": checkpoint.label,
                "tiny_random": checkpoint.tiny_random, "label": TINY_LABEL if checkpoint.tiny_random else ""}

    def config_digest(self) -> str:
        return _digest({**self.identity(), "defaults": asdict(self.generator.defaults),
                        "controlnets": sorted((k, v.source, v.revision) for k, v in self.generator.controlnets.items())})

    def generate(self, request: dict, seed: int, source: np.ndarray,
                 stored: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
        """``stored``: the round's control videos of this request (``clip_controls``), by kind; a kind not there is
        derived from the source window (edge and blur only)."""
        from cosmos_assets.models.generator import GenerationRequest

        controls = {}
        if self.generator.kind == TRANSFER25:
            stored = stored or {}
            controls = {name: (stored[name] if name in stored else control_video(source, name), float(weight))
                        for name, weight in json.loads(request["controls"]).items()}
        generated = self.generator.generate(GenerationRequest(
            prompt=request["prompt"], seed=seed, negative_prompt=request["negative_prompt"],
            num_frames=request["num_frames"], height=request["height"], width=request["width"], fps=request["fps"],
            conditioning_frames=None if controls else source, controls=controls,
        ))
        return generated.frames, generated.settings


def open_backend(kind: str, generator_resource=None):
    if kind == "classical":
        return ClassicalBackend()
    if kind == "generator":
        if generator_resource is None:
            raise ValueError("the generator backend needs the `generator` resource")
        return DiffusersBackend(generator_resource.get())
    raise ValueError(f"generator backend {kind!r}; expected one of {', '.join(BACKENDS)}")


def candidate_id(request_id: str, seed: int, backend_digest: str) -> str:
    return stable_id("synthetic-candidate", request_id, seed, backend_digest)


def candidate_files(root: str, candidate: str) -> tuple[str, str, str]:
    """Store keys of a candidate's video, thumbnail and record below ``root``."""
    folder = f"{root}/{candidate[:2]}"
    return f"{folder}/{candidate}.mp4", f"{folder}/{candidate}.jpg", f"{folder}/{candidate}.json"


def request_geometry_of(request: dict) -> Geometry:
    return Geometry(request["width"], request["height"], request["fps"], request["num_frames"])


def finished_candidate(store: ArtefactStore, root: str, candidate: str) -> dict | None:
    """The record of a candidate whose files are all in place, else None."""
    video, thumbnail, record = candidate_files(root, candidate)
    if store.exists(record) and store.exists(video) and store.exists(thumbnail):
        return store.read_json(record)
    return None


def generate_candidate(backend, request: dict, seed: int, source: np.ndarray, store: ArtefactStore, root: str,
                       round_key: str, controls: dict[str, np.ndarray] | None = None) -> dict:
    """Generate, write and record one candidate (or return its record if it was finished before). ``controls``: the
    request's stored control videos by kind, for a backend that generates from controls."""
    identity = backend.identity()
    candidate = candidate_id(request["request_id"], seed, backend.config_digest())
    existing = finished_candidate(store, root, candidate)
    if existing is not None:
        return {**existing, "round": round_key, "reused": True}
    frames, settings = backend.generate(request, seed, source, controls)
    video, thumbnail, record_path = candidate_files(root, candidate)
    with store.writing(video) as tmp:
        write_mp4(tmp, frames, request["fps"])
        digest = sha256_of_file(tmp)
    with store.writing(thumbnail) as tmp:
        write_jpeg(tmp, middle_frame(frames))
    record = {
        "candidate_id": candidate, "request_id": request["request_id"], "round": round_key, "origin": "generated",
        "seed": seed, "condition": request["condition"], "source_clip_id": request["source_clip_id"],
        "prompt": request["prompt"], **identity, "controls": request["controls"] if identity["backend"] == TRANSFER25 else "{}",
        "settings": json.dumps(settings, sort_keys=True, default=str), "path": store.ref(video),
        "thumbnail_path": store.ref(thumbnail), "sha256": digest, "width": int(frames.shape[2]), "height": int(frames.shape[1]),
        "fps": float(request["fps"]), "frames": int(len(frames)), "status": "ok", "error_class": None, "error_message": None,
    }
    store.write_json(record_path, record, indent=None)  # last: marks it complete
    return {**record, "reused": False}
