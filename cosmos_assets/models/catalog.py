"""What a configured model name means: ``tiny:<name>`` is a tiny random-weight checkpoint built here on
first use; anything else is a local directory or a Hugging Face model id already on this machine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cosmos_assets.models.checkpoints import Checkpoint, resolve_checkpoint

TINY_PREFIX = "tiny:"

# The generator kinds (the `kind` of the generator and trainer resources) and the diffusers pipeline
# class that loads each.
PREDICT2 = "predict2"
PREDICT25 = "predict2.5"
TRANSFER25 = "transfer2.5"
COSMOS3 = "cosmos3"  # Cosmos 3 Generator (its Reasoner is a critic: cosmos_assets.models.cosmos3)
GENERATOR_KINDS = (PREDICT2, PREDICT25, TRANSFER25, COSMOS3)
# Predict2 Text2Image makes images, not videos: a kind of its own, outside the video generator's kinds.
PREDICT2_T2I = "predict2-t2i"
PIPELINE_CLASSES = {
    PREDICT2: "Cosmos2VideoToWorldPipeline",
    PREDICT25: "Cosmos2_5_PredictBasePipeline",
    TRANSFER25: "Cosmos2_5_TransferPipeline",
    PREDICT2_T2I: "Cosmos2TextToImagePipeline",
    COSMOS3: "Cosmos3OmniPipeline",
}
# A Transfer 2.5 checkpoint keeps each control's ControlNet as a checkpoint of its own under
# controlnets/<control>/ (on the Hub they are separate revisions of one repository).
CONTROLNETS_FOLDER = "controlnets"

# What the `gpu` profile loads by default (users point these at local directories or cached ids).
DEFAULT_MODELS = {
    "vlm": "nvidia/Cosmos-Reason1-7B",
    "video_embedder": "google/siglip-so400m-patch14-384",
    PREDICT2: "nvidia/Cosmos-Predict2-2B-Video2World",
    PREDICT25: "nvidia/Cosmos-Predict2.5-2B",
    TRANSFER25: "nvidia/Cosmos-Transfer2.5-2B",
    PREDICT2_T2I: "nvidia/Cosmos-Predict2-2B-Text2Image",
    COSMOS3: "nvidia/Cosmos3-Nano",
}


def resolve_model(source: str, *, role: str, models_root: Path | None = None, revision: str | None = None) -> Checkpoint:
    if source.startswith(TINY_PREFIX):
        if models_root is None:
            raise ValueError(f"{role}: {source!r} is built under COSMOS_HOME/models; give its resource `home` "
                             "(the profile in cosmos_assets.definitions does)")
        from cosmos_assets.models.tiny import ensure_tiny

        checkpoint = resolve_checkpoint(str(ensure_tiny(models_root, source[len(TINY_PREFIX):])), role=role)
        return replace(checkpoint, name=source)  # named as configured: the same on every machine
    return resolve_checkpoint(
        source, role=role, revision=revision,
        how_to_provide=f"For a CPU-only trial, `{TINY_PREFIX}<name>` uses a tiny random-weight checkpoint (`cosmos models build-tiny`).",
    )
