"""Augmentation conditions and their generation prompts.

The Transfer weather recipe (cosmos_reference.md, Generation): caption the scene, rewrite the caption
per condition, generate with the source clip's structure as control. Prompts come from a template per
condition, or from the vision-language model rewriting the caption while it watches the clip; a
rewrite the model does not deliver in the asked format falls back to the template, and the prompt row
says which writer produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cosmos_assets.common.files import stable_id
from cosmos_assets.curation.captions import SIGNAL_LABEL
from cosmos_assets.models.vlm import GenerationSettings, VideoPrompt, parse_reasoned_answer


@dataclass(frozen=True)
class Condition:
    name: str
    clause: str  # what the scene looks like under the condition, appended to the scene description
    negative: str  # what must not appear, added to the negative prompt


CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("rain", "Heavy rain is falling: dense rain streaks, wet glossy surfaces with reflections, an overcast grey sky "
                      "and muted colours.", "sunshine, dry ground, clear blue sky"),
    Condition("fog", "Thick fog fills the scene: distant objects fade into a grey-white haze, contrast is low and the light "
                     "is soft and diffuse.", "clear air, sharp distant details, hard shadows"),
    Condition("snow", "It is snowing: snowflakes drift down through the air, the light is cold and bright and colours are "
                      "pale and bluish.", "green foliage, warm light, dry summer scene"),
    Condition("night", "It is night: the sky is dark, the scene is lit only by artificial lights, lamps and headlights glow "
                       "and the shadows are deep.", "daylight, sunshine, bright sky"),
    Condition("dusk", "It is dusk: low warm orange sunlight, long shadows and a fading pink and orange sky.",
              "midday sun, harsh overhead light, night darkness"),
)}

# The negative prompt Cosmos Predict2 uses by default, so generations look the way Cosmos users expect.
DEFAULT_NEGATIVE_PROMPT = (
    "The video captures a series of frames showing ugly scenes, static with no motion, motion blur, over-saturation, "
    "shaky footage, low resolution, grainy texture, pixelated images, poorly lit areas, underexposed and overexposed "
    "scenes, poor color balance, washed out colors, choppy sequences, jerky movements, low frame rate, artifacting, "
    "color banding, unnatural transitions, outdated special effects, fake elements, unconvincing visuals, poorly edited "
    "content, jump cuts, visual noise, and flickering. Overall, the video is of poor quality."
)

TEMPLATE_WRITER = "template-v1"
REWRITE_QUESTION = (
    "This is a description of the video: \"{caption}\"\n"
    "Rewrite it as a prompt for a video generator that shows exactly this scene, with the same objects, layout, camera "
    "and motion, under a new condition: {clause}\n"
    "Change only weather and lighting. Answer with the new prompt, one paragraph, inside <answer></answer> tags."
)
MIN_REWRITE_CHARS = 20  # shorter "prompts" are not a rewrite of a scene


def check_conditions(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; known: {', '.join(CONDITIONS)}")
    if not names:
        raise ValueError("at least one condition is needed")
    return list(dict.fromkeys(names))


def scene_description(caption: str | None) -> str:
    """The caption as a scene description: a signal caption's label is not part of the scene."""
    text = (caption or "").strip()
    if text.startswith(SIGNAL_LABEL):
        text = text[len(SIGNAL_LABEL):].strip()
    return text.rstrip(". ") or "A real-world scene recorded by a camera"


def template_prompt(caption: str | None, condition: str) -> str:
    return f"{scene_description(caption)}. {CONDITIONS[condition].clause}"


def negative_prompt(base: str, condition: str) -> str:
    return f"{base} {CONDITIONS[condition].negative.capitalize()}."


@dataclass(frozen=True)
class WrittenPrompt:
    prompt: str
    writer: str  # template-v1, or vlm:<model>@<version>
    status: str  # template | rewritten | fallback:<why>
    raw: str | None = None  # the model's text, kept when it was not usable


def rewrite_prompts(vlm, items: list[tuple[np.ndarray, float, str | None, str]], settings: GenerationSettings,
                    batch_size: int = 4) -> list[WrittenPrompt]:
    """Rewrite each (frames, fps, caption, condition) with the vision-language model; fall back to the template
    for every answer without a usable ``<answer>`` (the model's text is kept in ``raw``)."""
    identity = vlm.identity
    writer = f"vlm:{identity['model']}@{identity['model_version']}"
    results: list[WrittenPrompt] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        prompts = [VideoPrompt(frames, fps, REWRITE_QUESTION.format(caption=scene_description(caption),
                                                                    clause=CONDITIONS[condition].clause))
                   for frames, fps, caption, condition in chunk]
        for (_, _, caption, condition), texts in zip(chunk, vlm.generate(prompts, settings)):
            answer = parse_reasoned_answer(texts[0])
            if answer.parsed and len(answer.answer) >= MIN_REWRITE_CHARS:
                results.append(WrittenPrompt(" ".join(answer.answer.split()), writer, "rewritten"))
            else:
                why = "unparseable" if not answer.parsed else "too_short"
                results.append(WrittenPrompt(template_prompt(caption, condition), writer, f"fallback:{why}", texts[0]))
    return results


def templated(caption: str | None, condition: str) -> WrittenPrompt:
    return WrittenPrompt(template_prompt(caption, condition), TEMPLATE_WRITER, "template")


def request_id(source_clip_id: str, condition: str, prompt: str, negative: str, geometry: dict, controls: dict) -> str:
    """Deterministic: the same clip, condition, prompt and geometry is the same request in any round."""
    return stable_id("generation-request", source_clip_id, condition, prompt, negative, sorted(geometry.items()),
                     sorted(controls.items()))
