"""Critic training sets: labels split into train and test by video, balanced, and written as Cosmos RL conversations.

- **Split by video.** A salted hash of a label's video identity (``LabelRow.video``: a clip's source recording, a
  candidate, a landed file) decides its side, so one video never sits on both sides and a video keeps its side when
  more labels arrive. Only while one side would be empty is the video whose hash lies nearest the threshold moved
  there (``TrainingSet.forced``); that move undoes itself once enough videos exist.
- **Balance.** Score-like tasks (critique 1–5, plausibility yes / no) are balanced in train only; the cookbook's
  Reason critic trained on VideoPhy-2 as labelled learned to always answer 4. See ``BALANCE_MODES``.
- **Version.** ``TrainingSet.version`` is derived from the labels (content ids and video identities) and the recipe
  (prompt version, test fraction, salt, balancing), so the same labels and recipe give the same version anywhere.
- **Conversations.** Records ``{id, video, conversations: [{from, value}]}`` (LLaVA style, what Cosmos RL's SFT
  datasets read), built with the very prompts the critic sends at inference (imported from ``synthetic.critics``),
  so a tuned critic is asked in production exactly what it was trained on. GRPO records hold the prompt only and
  keep the reference answer apart in ``reference``. Users' conversation files import back into labels.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

from cosmos_assets.common.drop_zone import error_class
from cosmos_assets.common.files import JsonTooLarge, atomic_path, parse_bounded_json
from cosmos_assets.critic_training.labels import (
    LETTERS, MAX_JSON_DEPTH, MAX_LABEL_FILE_BYTES, MAX_LABEL_ROWS, BadAnswer, BadLabelRow, LabelRow,
    LabelRowError, MissingField, NotAnObject, ParsedLabels, make_label, choice_letter,
)
from cosmos_assets.models.vlm import parse_reasoned_answer
from cosmos_assets.synthetic.critics import (
    ANOMALY_QUESTION, ANOMALY_SYSTEM_PROMPT, RUBRIC_QUESTION, RUBRIC_SYSTEM_PROMPT, parse_rating, parse_verdict,
)

# The critic has no question-answering mode, so VQA prompts live here; a VQA evaluation asks with these.
VQA_SYSTEM_PROMPT = (
    "You are a helpful video analyzer who answers questions about what happens in a video. Think inside "
    "<think></think> tags, then give the final answer inside <answer></answer> tags; when options are listed, "
    "the answer is the letter of the right option."
)
VIDEO_MARKER = "<video>"  # where the video goes in a LLaVA-style human turn; inference sends the video first too

# Task → (system prompt, question) exactly as ``ReasonCritic`` sends them: ``rubric`` mode rates 1–5, ``reason``
# mode asks whether the video has anomalies (so a plausible video's answer is No).
CRITIC_PROMPTS = {
    "critique": (RUBRIC_SYSTEM_PROMPT, RUBRIC_QUESTION),
    "plausibility": (ANOMALY_SYSTEM_PROMPT, ANOMALY_QUESTION),
}
CRITIC_MODE_OF_TASK = {"critique": "rubric", "plausibility": "reason"}

SIDES = ("train", "test")
BALANCE_MODES = {
    "none": "train rows as labelled",
    "cap": "each answer class of a score task keeps at most ceil(balance_factor x the rarest class) train rows, "
           "chosen by a salted hash of the label id; nothing is repeated",
    "resample": "each answer class of a score task is brought to the mean class size: larger classes keep a "
                "hash-chosen subset, smaller ones repeat their rows in hash order (the cookbook's balance_labels)",
}
BALANCED_TASKS = ("critique", "plausibility")
MAX_CONVERSATION_TURNS = 16  # system, user, assistant and a few more; a longer record is no single-turn label


def prompt_version() -> str:
    """A short hash of every prompt a training set is written with: a prompt change makes a new training set."""
    prompts = {task: list(p) for task, p in CRITIC_PROMPTS.items()} | {"vqa": [VQA_SYSTEM_PROMPT, VIDEO_MARKER]}
    return "prompts-" + hashlib.sha256(json.dumps(prompts, sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class TrainingSetRecipe:
    """How labels become a training set; every field is part of the set's version."""

    test_fraction: float = 0.2
    salt: str = "critic-split/1"  # a new salt re-deals every video; keep it to keep sides stable
    balance: str = "cap"  # one of BALANCE_MODES
    balance_factor: float = 2.0  # the cap, as a multiple of the rarest class ("cap" only)
    prompt_version: str = field(default_factory=prompt_version)

    def __post_init__(self):
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction {self.test_fraction}; expected between 0 and 1")
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"balance {self.balance!r}; expected one of {', '.join(BALANCE_MODES)}")
        if self.balance_factor < 1:
            raise ValueError(f"balance_factor {self.balance_factor}; expected at least 1")

    def to_dict(self) -> dict:
        return asdict(self)


def _unit_hash(*parts: str) -> float:
    """A number in [0, 1) from a salted hash: the same on every machine and in every run."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_side(video: str, recipe: TrainingSetRecipe) -> str:
    """The side one video falls on by the hash rule alone (``test`` below the test fraction)."""
    return "test" if _unit_hash(recipe.salt, video) < recipe.test_fraction else "train"


@dataclass
class TrainingSet:
    """Labels split by video and balanced, with the version that names them."""

    version: str
    recipe: TrainingSetRecipe
    train: list[LabelRow]  # after balancing: under "resample" a row may appear more than once
    test: list[LabelRow]
    sides: dict[str, str]  # video identity → side
    forced: list[str] = field(default_factory=list)  # videos moved so that neither side is empty
    class_counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # side → task → class → rows

    def summary(self) -> dict:
        """Counts for the UI: rows and videos per side, classes before and after balancing."""
        videos = Counter(self.sides.values())
        return {"version": self.version, "recipe": self.recipe.to_dict(), "train_rows": len(self.train),
                "test_rows": len(self.test), "train_videos": videos["train"], "test_videos": videos["test"],
                "forced_videos": list(self.forced), "class_counts": self.class_counts}


    def records(self) -> list[dict]:
        """One table row per train row (repeats included) and test row: the label's fields, ``side`` and ``version``."""
        return [row.to_record() | {"side": side, "version": self.version}
                for side, rows in (("train", self.train), ("test", self.test)) for row in rows]


def rows_by_side(records: Iterable[Mapping]) -> dict[str, list[LabelRow]]:
    """The train and test rows back from ``TrainingSet.records`` (e.g. read from the training-set table)."""
    sides: dict[str, list[LabelRow]] = {side: [] for side in SIDES}
    for record in records:
        sides[record["side"]].append(LabelRow.from_record(record))
    return sides


def _answer_class(row: LabelRow) -> str:
    return str(row.score) if row.task == "critique" else row.answer


def _class_counts(rows: Iterable[LabelRow]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        counts[row.task][_answer_class(row)] += 1
    return {task: dict(sorted(c.items())) for task, c in sorted(counts.items())}


def balance_rows(rows: list[LabelRow], recipe: TrainingSetRecipe) -> list[LabelRow]:
    """Train rows balanced per ``recipe.balance`` (see ``BALANCE_MODES``); VQA rows pass unchanged."""
    if recipe.balance == "none":
        return list(rows)
    kept = [r for r in rows if r.task not in BALANCED_TASKS]
    for task in BALANCED_TASKS:
        classes: dict[str, list[LabelRow]] = defaultdict(list)
        for row in rows:
            if row.task == task:
                classes[_answer_class(row)].append(row)
        if not classes:
            continue
        for members in classes.values():
            members.sort(key=lambda r: _unit_hash(recipe.salt, "balance", r.label_id))
        if recipe.balance == "cap":
            target = math.ceil(recipe.balance_factor * min(len(m) for m in classes.values()))
            for members in classes.values():
                kept.extend(members[:target])
        else:
            target = max(1, sum(len(m) for m in classes.values()) // len(classes))
            for members in classes.values():
                kept.extend(members[i % len(members)] for i in range(target))
    return kept


def build_training_set(rows: Iterable[LabelRow], recipe: TrainingSetRecipe | None = None) -> TrainingSet:
    """A training set of resolved labels (``video`` set by ``labels.resolve_subjects``); repeats of a label id count once."""
    recipe = recipe or TrainingSetRecipe()
    unique: dict[str, LabelRow] = {}
    for row in rows:
        if row.video is None:
            raise ValueError(f"label {row.label_id} ({row.subject!r}) has no resolved video; resolve_subjects first")
        unique.setdefault(row.label_id, row)
    labels = sorted(unique.values(), key=lambda r: r.label_id)
    sides = {video: split_side(video, recipe) for video in sorted({r.video for r in labels})}
    forced = _keep_both_sides(sides, recipe)
    train = [r for r in labels if sides[r.video] == "train"]
    test = [r for r in labels if sides[r.video] == "test"]
    balanced = balance_rows(train, recipe)
    content = {"labels": [[r.label_id, r.video] for r in labels], "recipe": recipe.to_dict()}
    version = "cts-" + hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]
    counts = {"train_labelled": _class_counts(train), "train": _class_counts(balanced), "test": _class_counts(test)}
    return TrainingSet(version, recipe, balanced, test, sides, forced, counts)


def _keep_both_sides(sides: dict[str, str], recipe: TrainingSetRecipe) -> list[str]:
    """With two or more videos, move the one nearest the threshold onto an empty side (a set with no test side cannot
    be evaluated, one with no train side cannot be trained); returns the moved videos."""
    if len(sides) < 2:
        return []
    present = set(sides.values())
    for empty in SIDES:
        if empty not in present:
            nearest = min(sides, key=lambda v: (abs(_unit_hash(recipe.salt, v) - recipe.test_fraction), v))
            sides[nearest] = empty
            return [nearest]
    return []


# --- conversations ------------------------------------------------------------------------------------------------

def prompts_for(row: LabelRow) -> tuple[str, str]:
    """(system prompt, user text) for one label, exactly as inference asks it."""
    if row.task in CRITIC_PROMPTS:
        return CRITIC_PROMPTS[row.task]
    lines = [row.question] + [f"{LETTERS[i]}: {choice}" for i, choice in enumerate(row.choices)]
    return VQA_SYSTEM_PROMPT, "\n".join(lines)


def target_text(row: LabelRow) -> str:
    """What the critic should answer, in the tagged form the critic's parsers read.

    Plausibility is asked as "does the video contain anomalies?", so a plausible video's answer is No.
    """
    if row.task == "critique":
        answer = str(row.score)
    elif row.task == "plausibility":
        answer = "No" if row.answer == "yes" else "Yes"
    else:
        answer = row.answer
    return f"<answer>{answer}</answer>"


def conversation_record(row: LabelRow, video_path: str, mode: str = "sft", repeat: int = 0) -> dict:
    """One Cosmos RL / LLaVA record; ``mode='grpo'`` leaves the answer out of the turns and puts it in ``reference``.

    ``subject`` and ``task`` ride along so an exported file imports back into the same labels (Cosmos RL reads only
    the columns it knows). ``repeat`` numbers a row that balancing repeated, keeping ids unique.
    """
    if mode not in ("sft", "grpo"):
        raise ValueError(f"mode {mode!r}; expected sft or grpo")
    system, question = prompts_for(row)
    turns = [{"from": "system", "value": system}, {"from": "human", "value": f"{VIDEO_MARKER}\n{question}"}]
    record = {"id": row.label_id if not repeat else f"{row.label_id}#{repeat}", "video": video_path,
              "subject": row.subject, "task": row.task, "question_type": row.question_type, "caption": row.caption}
    if mode == "sft":
        record["conversations"] = turns + [{"from": "gpt", "value": target_text(row)}]
    else:
        record["conversations"] = turns
        record["reference"] = target_text(row)
    return record


def conversation_records(rows: Iterable[LabelRow], video_paths: Mapping[str, str] | Callable[[LabelRow], str],
                         mode: str = "sft") -> list[dict]:
    """Records for ``rows`` in order; ``video_paths`` maps a label's subject to its video file (or is a function of
    the row). A row without a video path is an error: a training record without its video is useless."""
    lookup = video_paths if callable(video_paths) else (lambda row: video_paths.get(row.subject))
    missing = sorted({row.subject for row in rows if not lookup(row)})
    if missing:
        raise ValueError(f"no video path for {len(missing)} subject(s), e.g. {missing[:3]}")
    repeats: Counter = Counter()
    records = []
    for row in rows:
        records.append(conversation_record(row, lookup(row), mode, repeats[row.label_id]))
        repeats[row.label_id] += 1
    return records


def export_conversations(rows: Iterable[LabelRow], video_paths: Mapping[str, str] | Callable[[LabelRow], str],
                         destination: str | os.PathLike, mode: str = "sft") -> int:
    """Write the records as JSONL at ``destination``, atomically; returns how many were written."""
    records = conversation_records(list(rows), video_paths, mode)
    with atomic_path(destination) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    return len(records)


_CHOICE_LINE = re.compile(r"^\s*\(?([A-J])\s*[:.)]\s*(.*?)\s*$")


def _turn(turn) -> tuple[str, str, str | None]:
    """(speaker, text, video) of a LLaVA turn ``{from, value}`` or a chat message ``{role, content}`` whose content
    may be a list of parts (text and video)."""
    if not isinstance(turn, dict):
        raise NotAnObject("a conversation turn is not an object")
    speaker = str(turn.get("from") or turn.get("role") or "").lower()
    speaker = {"user": "human", "assistant": "gpt"}.get(speaker, speaker)
    content = turn.get("value", turn.get("content"))
    video = None
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "video":
                video = str(part.get("video") or "") or None
            elif isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text") or ""))
        content = "\n".join(texts)
    return speaker, str(content or ""), video


def _question_and_choices(text: str) -> tuple[str, tuple[str, ...]]:
    """Split a user turn into its question and lettered options (``A: ...`` lines from A on); lines after the
    options (an instruction such as "answer with the letter") are not part of the question."""
    lines = text.replace(VIDEO_MARKER, "").strip().split("\n")
    question, choices = [], []
    for line in lines:
        match = _CHOICE_LINE.match(line)
        if match and len(choices) < len(LETTERS) and match.group(1) == LETTERS[len(choices)]:
            choices.append(match.group(2))
        elif not choices:
            question.append(line)
    return "\n".join(question).strip(), tuple(choices)


def label_from_conversation(record: dict, source: str, line: int, task: str | None = None) -> LabelRow:
    """One label from one conversation record (ours or a user's); raises a ``LabelRowError`` when it has none.

    The task is ``task`` when given, else the record's own ``task`` field, else the critic task whose question the
    user turn asks, else ``vqa``.
    """
    turns = record.get("conversations")
    if isinstance(turns, str):  # datasets saved by the cookbook's scripts hold the conversation as a JSON string
        try:
            turns = json.loads(turns)
        except json.JSONDecodeError:
            raise BadAnswer("conversations is not a JSON list") from None
    if not isinstance(turns, list) or not turns:
        raise MissingField("no conversations list")
    if len(turns) > MAX_CONVERSATION_TURNS:
        raise BadAnswer(f"{len(turns)} turns; a label is one question and one answer")
    parsed = [_turn(t) for t in turns]
    system = next((text for who, text, _ in parsed if who == "system"), None)
    human = next(((text, video) for who, text, video in parsed if who == "human"), None)
    if human is None:
        raise MissingField("no human / user turn")
    target = next((text for who, text, _ in parsed if who == "gpt"), None) or record.get("reference")
    if not target:
        raise MissingField("no answer: neither a gpt / assistant turn nor a reference")
    video = record.get("video") or human[1]
    if isinstance(video, list):
        video = video[0] if video else None
    subject = str(record.get("subject") or (PurePosixPath(str(video)).name if video else ""))
    question_text = human[0].replace(VIDEO_MARKER, "").strip()
    task = (task or str(record.get("task") or "")).lower()
    if task not in CRITIC_PROMPTS and task != "vqa":
        task = next((t for t, (s, q) in CRITIC_PROMPTS.items() if question_text == q and system in (s, None)), "vqa")
    common = {"question_type": record.get("question_type") or record.get("type"), "caption": record.get("caption"),
              "source": source, "line": line}
    if task == "critique":
        trial = parse_rating(target if "<answer>" in target else f"<answer>{target}</answer>")
        if not trial.parsed:
            raise BadAnswer(f"answer {target[:40]!r} holds no rating 1-5")
        return make_label(subject, task, score=trial.answer, **common)
    if task == "plausibility":
        trial = parse_verdict(target if "<answer>" in target else f"<answer>{target}</answer>")
        if not trial.parsed:
            raise BadAnswer(f"answer {target[:40]!r} is neither Yes nor No")
        return make_label(subject, task, answer="yes" if trial.answer == "No" else "no", **common)
    question, choices = _question_and_choices(human[0])
    reasoned = parse_reasoned_answer(target)
    answer = reasoned.answer if reasoned.parsed else target.strip()
    return make_label(subject, "vqa", question=question, answer=answer, choices=choices, **common)


def import_conversations(data: bytes, source: str, task: str | None = None) -> ParsedLabels:
    """Labels from a conversation file (JSONL, or one JSON array, as LLaVA / Cosmos RL datasets are exported);
    a record without a usable label is a bad row and the rest goes on. Resolve subjects afterwards as for any label.

    A user's file asks with its own prompts, so say which task it holds (``task='critique'``) unless its records
    carry a ``task`` field (ours do) or ask the critic's own questions; otherwise records are read as VQA.
    """
    if task is not None and task not in (*CRITIC_PROMPTS, "vqa"):
        raise ValueError(f"task {task!r}; expected critique, plausibility or vqa")
    result = ParsedLabels(source, "conversations")
    if len(data) > MAX_LABEL_FILE_BYTES:
        result.bad.append(BadLabelRow(source, None, "FileTooLarge", f"{len(data)} bytes; read up to {MAX_LABEL_FILE_BYTES}"))
        return result
    stripped = data.lstrip()
    if stripped.startswith(b"["):
        try:
            document = parse_bounded_json(data, source, MAX_LABEL_FILE_BYTES, MAX_JSON_DEPTH)
        except (JsonTooLarge, ValueError) as error:
            result.bad.append(BadLabelRow(source, None, "JsonTooLarge" if isinstance(error, JsonTooLarge) else "BadJson",
                                          str(error)))
            return result
        records = list(enumerate(document, start=1))
    else:
        records = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                records.append((number, parse_bounded_json(raw, f"line {number}", MAX_LABEL_FILE_BYTES, MAX_JSON_DEPTH)))
            except JsonTooLarge as error:
                result.bad.append(BadLabelRow(source, number, "JsonTooLarge", str(error)))
            except ValueError as error:
                result.bad.append(BadLabelRow(source, number, "BadJson", str(error)))
    seen: set[str] = set()
    for number, record in records[:MAX_LABEL_ROWS]:
        try:
            if not isinstance(record, dict):
                raise NotAnObject(f"record {number} is not an object")
            row = label_from_conversation(record, source, number, task)
        except LabelRowError as error:
            result.bad.append(BadLabelRow(source, number, error_class(error), str(error)))
            continue
        # A balanced export repeats rows (ids with '#n'); the label they carry is one label.
        if row.label_id not in seen:
            seen.add(row.label_id)
            result.rows.append(row)
    if len(records) > MAX_LABEL_ROWS:
        result.bad.append(BadLabelRow(source, None, "TooManyRows", f"only the first {MAX_LABEL_ROWS} records are read"))
    result.bad.sort(key=lambda bad: (bad.line is not None, bad.line or 0))  # in file order, whole-file ones first
    return result


def parse_prediction(row: LabelRow, text: str) -> int | str | None:
    """A critic's output text as a prediction comparable with ``row``: the score for critique, yes / no for
    plausibility (an anomaly answer inverted), the letter or answer for VQA; None when it cannot be parsed."""
    if row.task == "critique":
        trial = parse_rating(text)
        return int(trial.answer) if trial.parsed else None
    if row.task == "plausibility":
        trial = parse_verdict(text)
        return ("yes" if trial.answer == "No" else "no") if trial.parsed else None
    reasoned = parse_reasoned_answer(text)
    if not reasoned.parsed or not reasoned.answer:
        return None
    if not row.choices:
        return reasoned.answer
    try:
        return choice_letter(reasoned.answer, row.choices)
    except LabelRowError:
        return None
