"""Image prompts: from a user's prompt file (JSONL or CSV), or from the captions of curated clips rewritten per
condition (the same templates as the video prompts, ``synthetic.conditions``).

A prompt file row holds ``prompt`` (required), and optionally ``negative_prompt``, ``n`` (images to generate, the
N of best-of-N), ``seed`` (the first seed; the others follow it) and ``class_names`` (what a detector should find
in the images: a JSON list, or in CSV a string split at ``;`` or ``|``). A bad row is kept with an error class and
message and set aside; the other rows go on. No Dagster here.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from cosmos_assets.common.files import stable_id
from cosmos_assets.common.knobs import knob
from cosmos_assets.synthetic import conditions

PROMPT_FILE_SUFFIXES = (".jsonl", ".csv")
MAX_PROMPT_FILE_BYTES = 4 << 20
MAX_PROMPT_CHARS = 2000  # Predict2's T5 encoder reads 512 tokens; a longer text is not one prompt
MAX_CLASS_NAMES = 80  # COCO's count: more is a taxonomy, not classes to look for in one image
_CLASS_SEPARATORS = re.compile(r"[;|]")

# Predict2 Text2Image steers away from these; written for still images (the video default speaks of motion).
DEFAULT_IMAGE_NEGATIVE_PROMPT = (
    "The image is ugly and of poor quality: blurred or out of focus, over-saturated, low resolution, grainy or "
    "pixelated, badly lit, under- or overexposed, with poor or washed-out colours, colour banding, compression "
    "artefacts, distorted shapes, fake-looking elements and unconvincing detail."
)


@dataclass(frozen=True)
class PromptSettings:
    """How prompt rows become generation requests."""

    images_per_prompt: int = knob(2, "Images generated per prompt when a row gives no `n` (the N of best-of-N).")
    max_images_per_prompt: int = knob(16, "Most images one prompt may ask for; a larger `n` is a BadCount row.")
    base_seed: int = knob(0, "First seed of a prompt whose row gives no `seed`; its images use base_seed, +1, ...")
    negative_prompt: str = knob(DEFAULT_IMAGE_NEGATIVE_PROMPT, "Negative prompt of rows (and curated prompts) that give none.")


@dataclass
class PromptRow:
    """One prompt as read: ``error_class`` set when the row cannot be used (then the rest may be None)."""

    line: int  # 1-based line (JSONL) or data row (CSV)
    prompt: str | None = None
    negative_prompt: str | None = None
    n: int | None = None
    seed: int | None = None
    class_names: list[str] = field(default_factory=list)
    error_class: str | None = None
    error_message: str | None = None


class PromptRowError(ValueError):
    def __init__(self, error_class: str, message: str):
        super().__init__(message)
        self.error_class, self.message = error_class, message


def _text(value, name: str, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise PromptRowError("MissingPrompt", f"the row has no {name}")
        return None
    if not isinstance(value, str):
        raise PromptRowError("BadPrompt", f"{name} must be text, got {type(value).__name__}")
    text = " ".join(value.split())
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptRowError("PromptTooLong", f"{name} has {len(text)} characters; at most {MAX_PROMPT_CHARS}")
    return text


def _integer(value, name: str, error_class: str, low: int, high: int | None = None) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        raise PromptRowError(error_class, f"{name} {value!r} is not a whole number") from None
    if isinstance(number, bool) or not isinstance(number, int):
        raise PromptRowError(error_class, f"{name} {value!r} is not a whole number")
    if number < low or (high is not None and number > high):
        raise PromptRowError(error_class, f"{name} {number} is outside {low}..{high if high is not None else ''}")
    return number


def _class_names(value) -> list[str]:
    if value is None:
        return []
    names = _CLASS_SEPARATORS.split(value) if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PromptRowError("BadClassNames", "class_names must be a list of names (or, in CSV, names split by ; or |)")
    cleaned = list(dict.fromkeys(" ".join(n.split()) for n in names if n.strip()))
    if len(cleaned) > MAX_CLASS_NAMES:
        raise PromptRowError("BadClassNames", f"{len(cleaned)} class names; at most {MAX_CLASS_NAMES}")
    return cleaned


def _row(line: int, record, max_n: int) -> PromptRow:
    try:
        if not isinstance(record, dict):
            raise PromptRowError("NotAnObject", f"expected an object with a prompt, got {type(record).__name__}")
        return PromptRow(
            line=line, prompt=_text(record.get("prompt"), "prompt", True),
            negative_prompt=_text(record.get("negative_prompt"), "negative_prompt", False),
            n=_integer(record.get("n"), "n", "BadCount", 1, max_n),
            seed=_integer(record.get("seed"), "seed", "BadSeed", 0, 2**63 - 1 - max_n),
            class_names=_class_names(record.get("class_names", record.get("classes"))),
        )
    except PromptRowError as error:
        return PromptRow(line=line, error_class=error.error_class, error_message=error.message)


def parse_prompt_file(data: bytes, name: str, max_images_per_prompt: int = 16) -> list[PromptRow]:
    """The rows of a JSONL or CSV prompt file; a file that cannot be read at all is one error row (line 0)."""
    suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    problem = None
    if f".{suffix}" not in PROMPT_FILE_SUFFIXES:
        problem = ("UnsupportedFormat", f"{name}: expected one of {', '.join(PROMPT_FILE_SUFFIXES)}")
    elif len(data) > MAX_PROMPT_FILE_BYTES:
        problem = ("FileTooLarge", f"{name}: {len(data)} bytes; at most {MAX_PROMPT_FILE_BYTES}")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            problem = ("BadEncoding", f"{name} is not UTF-8 ({error.reason} at byte {error.start})")
    if problem:
        return [PromptRow(line=0, error_class=problem[0], error_message=problem[1])]
    rows: list[PromptRow] = []
    if suffix == "jsonl":
        for line, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as error:
                rows.append(PromptRow(line=line, error_class="BadJson", error_message=f"{error.msg} (column {error.colno})"))
                continue
            rows.append(_row(line, record, max_images_per_prompt))
        return rows
    reader = csv.DictReader(io.StringIO(text))
    if "prompt" not in (reader.fieldnames or []):
        return [PromptRow(line=0, error_class="MissingPromptColumn",
                          error_message=f"{name}: the CSV header names no `prompt` column ({reader.fieldnames})")]
    for line, record in enumerate(reader, start=1):
        if None in record:  # more cells than the header has names
            rows.append(PromptRow(line=line, error_class="BadCsvRow", error_message="more cells than header columns"))
            continue
        rows.append(_row(line, record, max_images_per_prompt))
    return rows


def request_id(prompt: str, negative_prompt: str, class_names: list[str], width: int, height: int,
               source_clip_id: str | None = None, condition: str | None = None) -> str:
    """Deterministic: the same prompt, negative prompt, classes, size and source is the same request in any round."""
    return stable_id("image-request", prompt, negative_prompt, sorted(class_names), width, height, source_clip_id, condition)


@dataclass(frozen=True)
class ImageRequest:
    """What ``synthetic_images`` generates: N seeds of one prompt."""

    request_id: str
    origin: str  # prompt_file | curated
    prompt: str
    negative_prompt: str
    seeds: list[int]
    class_names: list[str]
    width: int
    height: int
    source: str | None = None  # the prompt file's name and line, or None
    source_clip_id: str | None = None
    condition: str | None = None
    prompt_writer: str | None = None


def requests_from_rows(rows: list[PromptRow], settings: PromptSettings, width: int, height: int,
                       source_name: str) -> list[tuple[PromptRow, ImageRequest | None]]:
    """Each row with its request (None for a bad row); a row repeating an earlier row's request is a
    ``DuplicatePrompt`` row, so the same prompt is never generated twice in one file."""
    seen: dict[str, int] = {}
    result = []
    for row in rows:
        if row.error_class:
            result.append((row, None))
            continue
        negative = row.negative_prompt or settings.negative_prompt
        request = request_id(row.prompt, negative, row.class_names, width, height)
        if request in seen:
            row.error_class, row.error_message = "DuplicatePrompt", f"the same request as line {seen[request]}"
            result.append((row, None))
            continue
        seen[request] = row.line
        first = settings.base_seed if row.seed is None else row.seed
        n = row.n or settings.images_per_prompt
        result.append((row, ImageRequest(request, "prompt_file", row.prompt, negative, list(range(first, first + n)),
                                         row.class_names, width, height, source=f"{source_name}:{row.line}",
                                         prompt_writer="user")))
    return result


def requests_from_captions(clips: list[dict], condition_names: list[str], class_names: list[str],
                           settings: PromptSettings, width: int, height: int) -> list[ImageRequest]:
    """Per curated clip (``clip_id``, ``caption``) and condition, the caption rewritten for that condition, as the
    video prompts are (``synthetic.conditions``), with the condition's own negative clause."""
    names = conditions.check_conditions(condition_names)
    seeds = [settings.base_seed + i for i in range(settings.images_per_prompt)]
    requests = []
    for clip in clips:
        for condition in names:
            written = conditions.templated(clip.get("caption"), condition)
            negative = conditions.negative_prompt(settings.negative_prompt, condition)
            requests.append(ImageRequest(
                request_id(written.prompt, negative, class_names, width, height, clip["clip_id"], condition), "curated",
                written.prompt, negative, seeds, list(class_names), width, height, source_clip_id=clip["clip_id"],
                condition=condition, prompt_writer=written.writer,
            ))
    return requests


PROMPT_INBOX = "prompt_inbox"
PROMPT_PARTITION_PREFIX = "prompts-"


def prompt_inbox(home: str | Path) -> Path:
    """Where users drop prompt files ($COSMOS_HOME/prompt_inbox)."""
    return Path(home) / PROMPT_INBOX


def prompt_partition(digest: str) -> str:
    """A prompt file's round: named by its content, so the same file dropped twice is one round."""
    return f"{PROMPT_PARTITION_PREFIX}{digest[:16]}"
