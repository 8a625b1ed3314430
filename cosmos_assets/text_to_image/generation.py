"""Image candidates: N images per prompt from the Text2Image generator, each written once with its record.

A candidate's id is a UUID5 of its request, seed and the generator's recipe (checkpoint and settings), and its
files are named by that id: the image (PNG, lossless: it is training data), a JPEG thumbnail, and a JSON record of
everything that made it. Each is published whole to the artefact store, the record last, so a candidate whose
record exists is complete: a re-run after a crash reuses finished candidates and makes only the rest.
"""

from __future__ import annotations

import json

from PIL import Image

from cosmos_assets.common.artefacts import ArtefactStore, SYNTHETIC
from cosmos_assets.common.files import sha256_of_file, stable_id

CANDIDATES = f"{SYNTHETIC}/images"
THUMBNAIL_SIDE = 256


def candidate_id(request_id: str, seed: int, recipe: dict) -> str:
    return stable_id("synthetic-image", request_id, seed, json.dumps(recipe, sort_keys=True, default=str))


def candidate_files(candidate: str, root: str = CANDIDATES) -> tuple[str, str, str]:
    """Store keys of a candidate's image, thumbnail and record."""
    folder = f"{root}/{candidate[:2]}"
    return f"{folder}/{candidate}.png", f"{folder}/{candidate}.jpg", f"{folder}/{candidate}.json"


def finished_candidate(store: ArtefactStore, candidate: str, root: str = CANDIDATES) -> dict | None:
    """The record of a candidate whose files are all in place, else None."""
    image, thumbnail, record = candidate_files(candidate, root)
    if store.exists(record) and store.exists(image) and store.exists(thumbnail):
        return store.read_json(record)
    return None


def generate_image_candidate(generator, request: dict, seed: int, store: ArtefactStore, round_key: str,
                             root: str = CANDIDATES) -> dict:
    """Generate, write and record one image (or return its record if it was finished before).

    ``request``: a row of ``image_prompts`` (request_id, origin, prompt, negative_prompt, class_names, width, height,
    source_clip_id, condition). ``generator``: an ``ImageGenerator`` (``identity``, ``recipe``, ``generate``).
    """
    candidate = candidate_id(request["request_id"], seed, generator.recipe())
    existing = finished_candidate(store, candidate, root)
    if existing is not None:
        return {**existing, "round": round_key, "reused": True}
    made = generator.generate(request["prompt"], seed, request["negative_prompt"], request["height"], request["width"])
    image_key, thumbnail_key, record_key = candidate_files(candidate, root)
    picture = Image.fromarray(made.image)
    with store.writing(image_key) as tmp:
        picture.save(tmp, format="PNG")
        digest = sha256_of_file(tmp)
    with store.writing(thumbnail_key) as tmp:
        thumbnail = picture.copy()
        thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        thumbnail.save(tmp, format="JPEG", quality=85)
    record = {
        "candidate_id": candidate, "request_id": request["request_id"], "round": round_key, "origin": request["origin"],
        "seed": seed, "condition": request.get("condition"), "source_clip_id": request.get("source_clip_id"),
        "prompt": request["prompt"], "negative_prompt": request["negative_prompt"],
        "class_names": list(request.get("class_names") or []), **generator.identity,
        "settings": json.dumps(made.settings, sort_keys=True, default=str), "path": store.ref(image_key),
        "thumbnail_path": store.ref(thumbnail_key), "sha256": digest, "width": int(made.image.shape[1]),
        "height": int(made.image.shape[0]), "status": "ok", "error_class": None, "error_message": None,
    }
    store.write_json(record_key, record, indent=None)  # last: marks the candidate complete
    return {**record, "reused": False}
