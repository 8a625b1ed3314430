"""Critic labels: landed label files parsed into rows a critic is trained and evaluated on.

A label says, for one video, what a critic should answer to one task:

- ``critique``: a physical-commonsense score 1–5 (the VideoPhy-2 rubric that the rubric critic rates with);
- ``plausibility``: ``yes`` when the video is physically plausible (no anomaly or artifact), ``no`` when not;
- ``vqa``: the answer to a question about the video, free-form or one letter among choices (driving-scene
  multiple choice, WTS-style).

The video is named by a file name (a video landed beside the labels or in the landing zone), a clip id or a
synthetic candidate id; ``resolve_subjects`` maps each name to a known video or records it as ``UnknownSubject``.

Layouts (``detect_layout``, overridable with ``layout=``):

- ``generic``: JSONL or CSV with ``video`` (or ``file`` / ``clip_id`` / ``candidate_id``), ``task``, ``question``,
  ``answer`` or ``score``, optional ``question_type`` and ``choices`` (a JSON list, or ``|``-separated in CSV);
- ``videophy2``: the VideoPhy-2 release (``caption``, ``video_url``, ``sa``, ``pc``, ``joint``, rule lists,
  ``action``, ``category``, ``is_hard``, ...): one ``critique`` label per row, score = ``pc`` (physical
  commonsense), the video named by the file name at the end of ``video_url`` unless a ``video`` / ``file`` column
  names the local copy;
- ``multiple_choice``: rows of ``question``, options ``a``..``d`` (or an ``options`` / ``choices`` list), the answer
  letter in ``correct`` (or ``answer``) and ``type`` / ``question_type``; also WTS scene documents (a JSON array of
  scenes, each with ``overhead_videos`` / ``vehicle_videos`` and its ``environment`` questions).

A bad row becomes a ``BadLabelRow`` with an error class and the rest of the file goes on. ``label_id`` is derived
from a label's content, never from its file name, so one file landed twice under two names gives the same ids and
the second copy is recognised as duplicates (``new_labels``) instead of being counted twice.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import PurePosixPath
from urllib.parse import unquote, urlparse

from cosmos_assets.common.drop_zone import error_class
from cosmos_assets.common.files import (
    JsonTooLarge, display_name, open_regular_file_no_follow, parse_bounded_json, stable_id,
)

TASKS = ("critique", "plausibility", "vqa")
LAYOUTS = ("generic", "videophy2", "multiple_choice")
SUBJECT_KINDS = ("clip", "candidate", "file")
SELF_SUPERVISED_PREFIX = "self_supervised:"

# Bounds, checked before anything is kept. The whole VideoPhy-2 training release is under 1 MB for 3.4k videos,
# so 32 MiB leaves room for label sets a hundred times larger while a file is still read into memory at once.
MAX_LABEL_FILE_BYTES = 32 << 20
# A label row becomes a table row and a training sample; past this a file is a dump, not a label batch.
MAX_LABEL_ROWS = 200_000
# Questions, answers and captions: VideoPhy-2's upsampled captions and WTS questions are far shorter; a longer
# field would bloat the tables and every prompt built from it.
MAX_TEXT_CHARS = 16_384
# Video references are file names or ids (a UUID is 36 characters); a path longer than this is not a name.
MAX_REFERENCE_CHARS = 1_024
MAX_CHOICES = 10  # multiple choice is lettered A.. and driving-scene Q&A uses four
# One JSONL line is one label; nesting deeper than this is no label (and Python's parser recurses per level).
MAX_JSON_DEPTH = 8

SCORE_RANGE = (1, 5)
LETTERS = "ABCDEFGHIJ"  # one letter per choice, MAX_CHOICES of them

# Columns that name the video, and what kind of reference each holds (None: any kind, tried in resolve order).
SUBJECT_COLUMNS = (("video", None), ("file", "file"), ("clip_id", "clip"), ("candidate_id", "candidate"))
VIDEOPHY2_COLUMNS = frozenset({"video_url", "pc"})


# --- error classes: the class name is what ``error_class`` records ------------------------------------------------

class LabelRowError(ValueError):
    """A label row that cannot be used; subclasses name why."""


class MissingField(LabelRowError):
    pass


class UnknownTask(LabelRowError):
    pass


class BadScore(LabelRowError):
    """A score that is not a whole number."""


class ScoreOutOfRange(LabelRowError):
    pass


class BadAnswer(LabelRowError):
    """A plausibility answer other than yes / no, or a choice list that cannot be read."""


class AnswerNotAmongChoices(LabelRowError):
    pass


class FieldTooLong(LabelRowError):
    pass


class BadJson(LabelRowError):
    pass


class NotAnObject(LabelRowError):
    """A JSON line or array item that is not an object of fields."""


class BadCsv(LabelRowError):
    pass


class DuplicateLabel(LabelRowError):
    """The same label content again in the same file (the first one counts)."""


class UnknownSubject(LabelRowError):
    pass


# --- rows -----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelRow:
    """One label: what a critic should answer about one video."""

    label_id: str  # from what is taught: subject, task, answer / score, and for vqa question, choices, type
    subject: str  # the video as the label names it: a file name, clip id or candidate id
    task: str  # one of TASKS
    question: str  # "" for critique / plausibility: the critic asks its own fixed question there
    answer: str  # critique: the score as text; plausibility: yes / no; vqa: the letter, or the free-form answer
    score: int | None = None  # critique only, 1–5
    choices: tuple[str, ...] = ()
    question_type: str | None = None
    caption: str | None = None  # what the video was meant to show (VideoPhy-2's prompt), kept for context
    source: str = ""  # the label file's name, or 'self_supervised:<kind>'
    line: int | None = None  # line in a JSONL / CSV file, record number in a JSON array
    subject_kind: str | None = None  # 'clip' | 'candidate' | 'file' once known (a column may say it up front)
    video: str | None = None  # identity the train/test split groups by, set by ``resolve_subjects``

    def to_record(self) -> dict:
        """A plain dict for a table row (choices as a list)."""
        record = asdict(self)
        record["choices"] = list(self.choices)
        return record

    @classmethod
    def from_record(cls, record: Mapping) -> LabelRow:
        """The row back from ``to_record`` (e.g. read from the labels table)."""
        values = {name: record.get(name) for name in cls.__dataclass_fields__}
        values["choices"] = tuple(values["choices"] or ())
        values["source"] = values["source"] or ""
        return cls(**values)


@dataclass(frozen=True)
class BadLabelRow:
    """A row that was refused, and why; recorded beside the good rows, never silently dropped."""

    file: str
    line: int | None  # None when the whole file was refused
    error_class: str
    message: str

    def to_record(self) -> dict:
        return asdict(self)


@dataclass
class ParsedLabels:
    """What one label file held: its layout, its good rows and its refused ones."""

    source: str
    layout: str | None
    rows: list[LabelRow] = field(default_factory=list)
    bad: list[BadLabelRow] = field(default_factory=list)


# --- building and checking one label ------------------------------------------------------------------------------

def _text(value, name: str, limit: int = MAX_TEXT_CHARS) -> str:
    text = "" if value is None else str(value).strip()
    if len(text) > limit:
        raise FieldTooLong(f"{name} has {len(text)} characters; at most {limit} are read")
    return text


def parse_score(value) -> int:
    """A 1–5 score from ``4``, ``4.0`` or ``"4"``; ``BadScore`` for anything that is not a whole number."""
    if isinstance(value, bool):
        raise BadScore(f"score {value!r} is not a number")
    try:
        number = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
    except ValueError:
        raise BadScore(f"score {display_name(str(value))[:40]!r} is not a number") from None
    if not number.is_integer():
        raise BadScore(f"score {number:g} is not a whole number")
    if not SCORE_RANGE[0] <= number <= SCORE_RANGE[1]:
        raise ScoreOutOfRange(f"score {number:g} is outside {SCORE_RANGE[0]}–{SCORE_RANGE[1]}")
    return int(number)


def _plausibility_answer(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    answer = str(value or "").strip().lower()
    if answer not in ("yes", "no"):
        raise BadAnswer(f"plausibility answer {answer[:40]!r} is neither yes nor no")
    return answer


def choice_letter(answer: str, choices: tuple[str, ...]) -> str:
    """The letter of ``answer`` among ``choices``: a letter (``B``, ``b``, ``(B)``, ``B.``) or a choice's own text."""
    letter = answer.strip().strip("().:").strip().upper()
    if len(letter) == 1 and letter.isalpha():
        if letter in LETTERS[: len(choices)]:
            return letter
        raise AnswerNotAmongChoices(f"answer {letter!r} is not among choices {LETTERS[0]}–{LETTERS[len(choices) - 1]}")
    for index, choice in enumerate(choices):
        if answer.strip().lower() == choice.lower():
            return LETTERS[index]
    raise AnswerNotAmongChoices(f"answer {answer[:40]!r} is neither a choice letter nor a choice's text")


def make_label(subject: str, task: str, *, question: str = "", answer=None, score=None, choices: Iterable[str] = (),
               question_type: str | None = None, caption: str | None = None, source: str = "",
               line: int | None = None, subject_kind: str | None = None, video: str | None = None) -> LabelRow:
    """A checked label with its content-derived id; raises a ``LabelRowError`` subclass when it cannot be used.

    Self-supervised generators call this too (``source='self_supervised:<kind>'``, ``video`` set to the identity of
    the real clip a derived video came from, so every version of one clip lands on the same side of the split).
    """
    subject = _text(subject, "video reference", MAX_REFERENCE_CHARS)
    if not subject:
        raise MissingField("no video, file, clip_id or candidate_id")
    task = _text(task, "task", 64).lower()
    if not task:
        raise MissingField("no task")
    if task not in TASKS:
        raise UnknownTask(f"task {task!r}; expected one of {', '.join(TASKS)}")
    if subject_kind is not None and subject_kind not in SUBJECT_KINDS:
        raise ValueError(f"subject kind {subject_kind!r}; expected one of {SUBJECT_KINDS}")
    question = _text(question, "question")
    caption = _text(caption, "caption") or None
    question_type = _text(question_type, "question_type", 200) or None
    choices = tuple(_text(c, "a choice") for c in choices)
    if len(choices) > MAX_CHOICES:
        raise FieldTooLong(f"{len(choices)} choices; at most {MAX_CHOICES} are read")
    if task == "critique":
        raw = score if score not in (None, "") else answer
        if raw in (None, ""):
            raise MissingField("a critique label needs a score 1–5")
        score = parse_score(raw)
        answer = str(score)
    elif task == "plausibility":
        if answer in (None, ""):
            raise MissingField("a plausibility label needs an answer yes or no")
        answer, score = _plausibility_answer(answer), None
    else:
        answer, score = _text(answer, "answer"), None
        if not question:
            raise MissingField("a vqa label needs a question")
        if not answer:
            raise MissingField("a vqa label needs an answer")
        if choices:
            answer = choice_letter(answer, choices)
    # The id is what the critic is taught: for critique and plausibility the critic asks its own fixed question,
    # so a label's question text and the caption (context for people) do not make it another label.
    label_id = stable_id("critic-label/1", subject, task, question if task == "vqa" else "", answer, score,
                         json.dumps(choices, ensure_ascii=False), question_type or "")
    return LabelRow(label_id, subject, task, question, answer, score, choices, question_type, caption,
                    source, line, subject_kind, video)


# --- reading one record of each layout ----------------------------------------------------------------------------

def _fields(record: Mapping) -> dict:
    """Field names compared without case or surrounding spaces (spreadsheets capitalise headers)."""
    return {str(k).strip().lower(): v for k, v in record.items() if k is not None}


def _subject(record: dict) -> tuple[str, str | None]:
    for column, kind in SUBJECT_COLUMNS:
        value = record.get(column)
        if value not in (None, ""):
            return str(value), kind
    return "", None


def _choices(record: dict) -> tuple[str, ...]:
    """Choices from a list, a JSON-array string, ``|``-separated text, or lettered columns ``a``, ``b``, ..."""
    for name in ("choices", "options"):
        value = record.get(name)
        if value in (None, ""):
            continue
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise BadAnswer(f"{name} is not a JSON list") from None
            else:
                value = text.split("|")
        if isinstance(value, dict):  # {"A": "...", "B": "..."}
            value = [value[k] for k in sorted(value, key=lambda k: str(k).upper())]
        if not isinstance(value, list):
            raise BadAnswer(f"{name} is not a list")
        return tuple(str(v) for v in value)
    lettered = []
    for letter in LETTERS.lower():
        value = record.get(letter)
        if value in (None, ""):
            break
        lettered.append(str(value))
    return tuple(lettered)


def _generic_label(record: dict, source: str, line: int) -> LabelRow:
    subject, kind = _subject(record)
    return make_label(subject, record.get("task") or "", question=record.get("question") or "",
                      answer=record.get("answer"), score=record.get("score"), choices=_choices(record),
                      question_type=record.get("question_type"), caption=record.get("caption"),
                      source=source, line=line, subject_kind=kind)


def _videophy2_subject(record: dict) -> tuple[str, str | None]:
    subject, kind = _subject(record)
    if subject:
        return subject, kind
    url = str(record.get("video_url") or "").strip()
    # The release names each video by its URL; the file name at its end is what a downloaded copy is called.
    name = unquote(PurePosixPath(urlparse(url).path).name) if url else ""
    return name, "file"


def _videophy2_label(record: dict, source: str, line: int) -> LabelRow:
    subject, kind = _videophy2_subject(record)
    if record.get("pc") in (None, ""):
        raise MissingField("no pc (physical commonsense) score")
    return make_label(subject, "critique", score=record.get("pc"), caption=record.get("caption"),
                      source=source, line=line, subject_kind=kind)


def _multiple_choice_label(record: dict, source: str, line: int) -> LabelRow:
    subject, kind = _subject(record)
    choices = _choices(record)
    if not choices:
        raise MissingField("no choices (a..d, options or choices)")
    answer = record.get("correct") if record.get("correct") not in (None, "") else record.get("answer")
    return make_label(subject, "vqa", question=record.get("question") or "", answer=answer, choices=choices,
                      question_type=record.get("question_type") or record.get("type"), source=source, line=line,
                      subject_kind=kind)


def _wts_scene_labels(scene: dict, source: str, line: int) -> Iterator[LabelRow | BadLabelRow]:
    """A WTS scene: every environment question asked of every overhead / vehicle view of the scene."""
    videos = [v for key in ("overhead_videos", "vehicle_videos") for v in (scene.get(key) or [])]
    questions = scene.get("environment") or []
    if not videos or not isinstance(questions, list):
        yield BadLabelRow(source, line, "MissingField", "a WTS scene needs overhead_videos or vehicle_videos "
                                                        "and an environment list")
        return
    for video in videos:
        for number, question in enumerate(questions, start=1):
            try:
                if not isinstance(question, dict):
                    raise NotAnObject(f"environment question {number} is not an object")
                record = _fields(question)
                yield make_label(str(video), "vqa", question=record.get("question") or "",
                                 answer=record.get("correct") or record.get("answer"), choices=_choices(record),
                                 question_type="environment", source=source, line=line, subject_kind="file")
            except LabelRowError as error:
                yield BadLabelRow(source, line, error_class(error), f"question {number} of {video!r}: {error}")


RECORD_READERS = {"generic": _generic_label, "videophy2": _videophy2_label, "multiple_choice": _multiple_choice_label}


# --- layouts and containers ---------------------------------------------------------------------------------------

def layout_of_fields(fields: Iterable[str]) -> str:
    """Which layout a set of column / field names belongs to (see the module docstring)."""
    names = {str(f).strip().lower() for f in fields}
    if VIDEOPHY2_COLUMNS <= names:
        return "videophy2"
    if "task" not in names and ("correct" in names or {"a", "b"} <= names or "options" in names):
        return "multiple_choice"
    return "generic"


def _container(text: str) -> str:
    """``json`` (one array), ``jsonl`` (an object per line) or ``csv``, from the first character that is not space."""
    head = text.lstrip()[:1]
    return "json" if head == "[" else "jsonl" if head == "{" else "csv"


def detect_layout(data: bytes) -> str:
    """The layout of a label file's bytes: from its CSV header, or the fields of its first JSON records."""
    parsed = parse_label_file(data, "detect", max_rows=50)
    return parsed.layout or "generic"


def _csv_records(text: str, source: str) -> tuple[list[str], Iterator[tuple[int, dict | BadLabelRow]]]:
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first_line and "," not in first_line else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = reader.fieldnames or []
    except csv.Error as error:
        header = []
        first = BadLabelRow(source, 1, "BadCsv", f"header: {error}")
        return header, iter([(1, first)])

    def records():
        while True:
            start = reader.line_num + 1  # a record that fails to parse is named by the line it starts on
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield start, BadLabelRow(source, start, "BadCsv", str(error))
                continue
            if row.get(None):
                yield reader.line_num, BadLabelRow(source, reader.line_num, "BadCsv",
                                                   f"{len(row[None])} more fields than the header names")
                continue
            yield reader.line_num, row

    return header, records()


def _jsonl_records(data: bytes, source: str) -> Iterator[tuple[int, dict | BadLabelRow]]:
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = parse_bounded_json(raw, f"line {number}", MAX_TEXT_CHARS * 4, MAX_JSON_DEPTH)
        except JsonTooLarge as error:
            yield number, BadLabelRow(source, number, "JsonTooLarge", str(error))
            continue
        except ValueError as error:
            yield number, BadLabelRow(source, number, "BadJson", str(error))
            continue
        if not isinstance(record, dict):
            yield number, BadLabelRow(source, number, "NotAnObject", f"line {number} is not a JSON object")
            continue
        yield number, record


def parse_label_file(data: bytes, source: str, layout: str | None = None,
                     max_rows: int = MAX_LABEL_ROWS) -> ParsedLabels:
    """Every label in one file's bytes; ``source`` is the file's name (kept on each row, never part of its id)."""
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}; expected one of {LAYOUTS}")
    result = ParsedLabels(source, layout)
    if len(data) > MAX_LABEL_FILE_BYTES:
        result.bad.append(BadLabelRow(source, None, "FileTooLarge",
                                      f"{len(data)} bytes; label files are read up to {MAX_LABEL_FILE_BYTES}"))
        return result
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark from spreadsheet exports is no field name
    except UnicodeDecodeError as error:
        result.bad.append(BadLabelRow(source, None, "NotUtf8", f"not UTF-8 text: {error}"))
        return result
    container = _container(text)
    if container == "json":
        _parse_json_document(data, result, max_rows)
        return result
    if container == "jsonl":
        records = list(_jsonl_records(text.encode(), source))
        fields = {k for _, r in records[:50] if isinstance(r, dict) for k in r}
    else:
        header, iterator = _csv_records(text, source)
        records, fields = iterator, set(header)
    result.layout = result.layout or layout_of_fields(fields)
    _take_records(records, result, max_rows)
    return result


def _parse_json_document(data: bytes, result: ParsedLabels, max_rows: int) -> None:
    try:
        document = parse_bounded_json(data, result.source, MAX_LABEL_FILE_BYTES, MAX_JSON_DEPTH)
    except JsonTooLarge as error:
        result.bad.append(BadLabelRow(result.source, None, "JsonTooLarge", str(error)))
        return
    except ValueError as error:
        result.bad.append(BadLabelRow(result.source, None, "BadJson", str(error)))
        return
    records = list(enumerate(document, start=1))
    scenes = [item for _, item in records if isinstance(item, dict) and "environment" in _fields(item)]
    if scenes and result.layout in (None, "multiple_choice"):
        result.layout = "multiple_choice"
        seen: dict[str, int] = {}
        for number, item in records:
            if not isinstance(item, dict):
                result.bad.append(BadLabelRow(result.source, number, "NotAnObject", f"record {number} is not an object"))
                continue
            for row in _wts_scene_labels(_fields(item), result.source, number):
                if not _keep(row, result, seen, max_rows):
                    return
        return
    fields = {k for _, item in records[:50] if isinstance(item, dict) for k in item}
    result.layout = result.layout or layout_of_fields(fields)
    _take_records(((n, item if isinstance(item, dict) else
                    BadLabelRow(result.source, n, "NotAnObject", f"record {n} is not an object")) for n, item in records),
                  result, max_rows)


def _keep(row: LabelRow | BadLabelRow, result: ParsedLabels, seen: dict[str, int], max_rows: int) -> bool:
    """Add one row (refusing a repeat of a label already in this file); False once the file's row bound is hit."""
    if len(result.rows) + len(result.bad) >= max_rows:
        result.bad.append(BadLabelRow(result.source, row.line, "TooManyRows",
                                      f"only the first {max_rows} rows of a label file are read"))
        return False
    if isinstance(row, LabelRow):
        if row.label_id in seen:
            row = BadLabelRow(result.source, row.line, "DuplicateLabel",
                              f"the same label as line {seen[row.label_id]}")
        else:
            seen[row.label_id] = row.line
    (result.rows if isinstance(row, LabelRow) else result.bad).append(row)
    return True


def _take_records(records: Iterable[tuple[int, dict | BadLabelRow]], result: ParsedLabels, max_rows: int) -> None:
    reader = RECORD_READERS[result.layout]
    seen: dict[str, int] = {}
    for number, record in records:
        if isinstance(record, dict):
            try:
                record = reader(_fields(record), result.source, number)
            except LabelRowError as error:
                record = BadLabelRow(result.source, number, error_class(error), str(error))
        if not _keep(record, result, seen, max_rows):
            return


def read_label_file(path: str | os.PathLike, source: str | None = None, layout: str | None = None) -> ParsedLabels:
    """``parse_label_file`` of a file on disk, opened without following links and refused past the size bound
    before it is read whole. A file that cannot be opened is one bad row (its error class), not an exception."""
    source = source or display_name(os.fsencode(path).rsplit(b"/", 1)[-1])
    try:
        with open_regular_file_no_follow(path) as stream:
            data = stream.read(MAX_LABEL_FILE_BYTES + 1)
    except OSError as error:
        return ParsedLabels(source, layout, bad=[BadLabelRow(source, None, error_class(error), str(error))])
    return parse_label_file(data, source, layout)


# --- after parsing ------------------------------------------------------------------------------------------------

def _known(references: Mapping[str, str] | Iterable[str]) -> Mapping[str, str]:
    """Known references and the video identity each stands for (a plain list: each is its own identity)."""
    return references if isinstance(references, Mapping) else {r: r for r in references}


def resolve_subjects(rows: Iterable[LabelRow], clips: Mapping[str, str] | Iterable[str] = (),
                     candidates: Mapping[str, str] | Iterable[str] = (),
                     files: Mapping[str, str] | Iterable[str] = ()) -> tuple[list[LabelRow], list[BadLabelRow]]:
    """Map each label's video to a known clip id, candidate id or landed file name.

    Each mapping goes from a reference to the identity the train/test split groups by: give a clip's source video
    hash to keep all clips of one recording on one side; a plain list makes each reference its own identity. A
    column that said what the reference is (``clip_id``, ``candidate_id``, ``file``) is only looked up there; a
    ``video`` reference is tried as clip id, then candidate id, then file name (whole, then its last path part).
    Rows that already carry ``video`` (self-supervised ones) pass unchanged; an unknown video is a bad row with the
    error class ``UnknownSubject``.
    """
    tables = {"clip": _known(clips), "candidate": _known(candidates), "file": _known(files)}
    resolved: list[LabelRow] = []
    bad: list[BadLabelRow] = []
    for row in rows:
        if row.video is not None:
            resolved.append(row)
            continue
        found = None
        for kind in ([row.subject_kind] if row.subject_kind else SUBJECT_KINDS):
            names = [row.subject] if kind != "file" else [row.subject, PurePosixPath(row.subject).name]
            identity = next((tables[kind][n] for n in names if n in tables[kind]), None)
            if identity is not None:
                found = replace(row, subject_kind=kind, video=identity)
                break
        if found is None:
            where = f"{row.subject_kind} " if row.subject_kind else "clip, candidate or file "
            bad.append(BadLabelRow(row.source, row.line, "UnknownSubject",
                                   f"no {where}{row.subject[:200]!r} is known"))
        else:
            resolved.append(found)
    return resolved, bad


def new_labels(rows: Iterable[LabelRow], seen_label_ids: Iterable[str]) -> tuple[list[LabelRow], list[LabelRow]]:
    """Split ``rows`` into labels not seen before and duplicates of ones already recorded (or earlier in ``rows``)."""
    seen = set(seen_label_ids)
    fresh: list[LabelRow] = []
    duplicates: list[LabelRow] = []
    for row in rows:
        (duplicates if row.label_id in seen else fresh).append(row)
        seen.add(row.label_id)
    return fresh, duplicates
