"""The critic loop's steps between the label files and the trainers, as plain functions the assets call.

- ``self_supervised_labels``: plausible and implausible versions of curated clips (``self_supervised``), written as
  real H.264 videos on the store, with a label each. They are videos, not frame indices, so a training set exports
  to Cosmos RL as it is and every critic sees them exactly as it sees any other video.
- ``landed_labels``: a label file's rows (``labels``), resolved against what the store knows (curated clips,
  synthetic candidates, landed source videos, videos dropped beside the labels), each with its video's path.
- ``feature_examples`` / ``feature_predictions``: labelled videos as the feature critic trains on and answers them.
- ``majority_predictions``: the untrained baseline (the most common training answer), which a first critic must beat.

No Dagster here.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from cosmos_assets.common.artefacts import CRITIC, ArtefactStore
from cosmos_assets.critic_training.feature_critic import FeatureCritic
from cosmos_assets.critic_training.labels import (
    BadLabelRow, LabelRow, LabelRowError, make_label, parse_label_file, resolve_subjects,
)
from cosmos_assets.critic_training.self_supervised import (
    PlausibilityExample, SelfSupervisedSettings, SourceClip, clip_from_file, plausibility_variants,
)
from cosmos_assets.critic_training.reason_tuning import CritiqueExample
from cosmos_assets.critic_training.training_set import import_conversations, parse_prediction, prompts_for, target_text
from cosmos_assets.models.frames import sample_frames
from cosmos_assets.models.vlm import GenerationSettings, VideoPrompt
from cosmos_assets.common.drop_zone import error_class
from cosmos_assets.synthetic.video import write_mp4

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
# A critique score the feature critic learns from: 4-5 plausible, 1-2 implausible; 3 says neither, so it is
# evaluated (as a score) but not trained on.
PLAUSIBLE_SCORES, IMPLAUSIBLE_SCORES = (4, 5), (1, 2)


@dataclass
class LabelledVideos:
    """Resolved labels with the store reference of each one's video, and the rows refused with their class."""

    rows: list[LabelRow] = field(default_factory=list)
    video_paths: dict[str, str] = field(default_factory=dict)  # label id -> video reference on the store
    bad: list[BadLabelRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self, partition: str) -> pl.DataFrame:
        """One table: good rows (``error_class`` null) and refused rows, so nothing is lost."""
        good = [{**r.to_record(), "video_path": self.video_paths[r.label_id], "label_partition": partition,
                 "error_class": None, "error_message": None} for r in self.rows]
        refused = [{"label_id": None, "subject": None, "task": None, "question": None, "answer": None, "score": None,
                    "choices": [], "question_type": None, "caption": None, "source": b.file, "line": b.line,
                    "subject_kind": None, "video": None, "video_path": None, "label_partition": partition,
                    "error_class": b.error_class, "error_message": b.message[:500]} for b in self.bad]
        return pl.DataFrame(good + refused, schema=LABELS_SCHEMA)


LABELS_SCHEMA = {
    "label_id": pl.String, "subject": pl.String, "task": pl.String, "question": pl.String, "answer": pl.String,
    "score": pl.Int64, "choices": pl.List(pl.String), "question_type": pl.String, "caption": pl.String,
    "source": pl.String, "line": pl.Int64, "subject_kind": pl.String, "video": pl.String, "video_path": pl.String,
    "label_partition": pl.String, "error_class": pl.String, "error_message": pl.String,
}


def self_supervised_labels(store: ArtefactStore, clips: list[dict], settings: SelfSupervisedSettings,
                           max_clips: int, progress=None) -> LabelledVideos:
    """Plausibility labels from curated clips (rows with ``clip_id``, ``source_hash``, ``path``): each clip's
    windows as they are and edited, as videos under ``critic/self_supervised/``. Every version of one clip is split
    with its source video. Re-running writes nothing twice (names are content-derived)."""
    out = LabelledVideos()
    chosen = sorted(clips, key=lambda c: c["clip_id"])[:max_clips]
    for number, clip in enumerate(chosen, start=1):
        try:
            source = clip_from_file(store.local_path(clip["path"]), clip["clip_id"], clip["source_hash"], settings)
            variants = plausibility_variants(source, settings)
        except (ValueError, OSError) as error:  # an unreadable or too short clip: recorded, the rest goes on
            out.bad.append(BadLabelRow(clip["clip_id"], None, error_class(error), str(error)[:300]))
            continue
        out.notes += [f"{s.clip_id[:8]} {s.kind}: {s.reason}" for s in variants.skipped]
        for example in variants.examples:
            frames = example.frames()
            name = hashlib.sha256(np.ascontiguousarray(frames).data).hexdigest()[:16]
            key = f"{CRITIC}/self_supervised/{clip['clip_id']}/{example.kind}-{name}.mp4"
            if not store.exists(key):
                with store.writing(key) as tmp:
                    write_mp4(tmp, frames, source.fps)
            label = make_label(f"{clip['clip_id']}/{example.kind}-{name}", "plausibility",
                               answer="yes" if example.plausible else "no", source=f"self_supervised:{example.kind}",
                               subject_kind="file", video=clip["source_hash"])
            out.rows.append(label)
            out.video_paths[label.label_id] = store.ref(key)
        if progress:
            progress(number, len(chosen))
    return out


def parse_landed(data: bytes, name: str, layout: str | None) -> tuple[list[LabelRow], list[BadLabelRow]]:
    """A landed label file's rows: Cosmos RL conversation files (``layout='conversations'`` or records carrying
    ``conversations``) through the importer, every other layout through the label parser."""
    if layout == "conversations" or (layout is None and b'"conversations"' in data[:65536]):
        parsed = import_conversations(data, name)
    else:
        parsed = parse_label_file(data, name, layout)
    return parsed.rows, parsed.bad


def landed_labels(rows: list[LabelRow], bad: list[BadLabelRow], clips: pl.DataFrame, candidates: pl.DataFrame,
                  sources: pl.DataFrame, beside: dict[str, str]) -> LabelledVideos:
    """Resolve each row's video: a curated clip id, a synthetic candidate id, a landed source video's name, or a
    video file dropped beside the labels (``beside``: name -> store reference). Clips and their candidates split with
    their source video; an unknown video is ``UnknownSubject``."""
    clip_source = dict(zip(clips["clip_id"], clips["source_hash"])) if clips.height else {}
    clip_path = dict(zip(clips["clip_id"], clips["path"])) if clips.height else {}
    candidate_source, candidate_path = {}, {}
    for row in candidates.iter_rows(named=True) if candidates.height else []:
        candidate_source[row["candidate_id"]] = clip_source.get(row["source_clip_id"], row["candidate_id"])
        candidate_path[row["candidate_id"]] = row["path"]
    files, file_path = {}, {}
    for row in sources.iter_rows(named=True) if sources.height else []:
        files[row["landing_name"]] = row["content_hash"]
        files.setdefault(Path(row["landing_name"]).name, row["content_hash"])
        file_path[row["content_hash"]] = row["raw_path"]
    for name, reference in beside.items():
        identity = "beside:" + hashlib.sha256(reference.encode()).hexdigest()[:16]
        files[name], file_path[identity] = identity, reference
    resolved, unknown = resolve_subjects(rows, clip_source, candidate_source, files)
    out = LabelledVideos(bad=list(bad) + unknown)
    for row in resolved:
        if row.subject_kind == "clip":
            path = clip_path[row.subject]
        elif row.subject_kind == "candidate":
            path = candidate_path[row.subject]
        else:
            path = file_path[row.video]
        out.rows.append(row)
        out.video_paths[row.label_id] = path
    return out


def _window(frames: np.ndarray, length: int) -> np.ndarray:
    """``length`` frames from the middle of a video (a short video's last frame is held)."""
    if len(frames) >= length:
        start = (len(frames) - length) // 2
        return frames[start:start + length]
    return np.concatenate([frames, np.repeat(frames[-1:], length - len(frames), axis=0)])


def plausible_label(row: LabelRow) -> bool | None:
    """What a label says about plausibility: a plausibility answer, or a critique score of 4-5 / 1-2; None otherwise."""
    if row.task == "plausibility":
        return row.answer == "yes"
    if row.task == "critique" and row.score in PLAUSIBLE_SCORES + IMPLAUSIBLE_SCORES:
        return row.score in PLAUSIBLE_SCORES
    return None


def labelled_clip(store: ArtefactStore, row: LabelRow, path: str, settings: SelfSupervisedSettings) -> SourceClip:
    """A labelled video as the feature critic sees it: the settings' rate, one window of the settings' length."""
    clip = clip_from_file(store.local_path(path), row.label_id, row.video or row.subject, settings)
    return replace(clip, frames=_window(clip.frames, settings.window_frames))


def feature_examples(store: ArtefactStore, rows: list[LabelRow], video_paths: dict[str, str],
                     settings: SelfSupervisedSettings) -> tuple[list[PlausibilityExample], list[str]]:
    """Training examples for the feature critic: rows that say plausible or not (VQA and score-3 rows cannot)."""
    examples, skipped = [], []
    for row in rows:
        plausible = plausible_label(row)
        if plausible is None:
            skipped.append(f"{row.label_id[:8]}: {row.task} {row.answer!r} says nothing about plausibility")
            continue
        clip = labelled_clip(store, row, video_paths[row.label_id], settings)
        kind = row.source.split(":", 1)[1] if row.source.startswith("self_supervised:") else "labelled"
        examples.append(PlausibilityExample(clip, kind, plausible, tuple(range(len(clip.frames)))))
    return examples, skipped


def feature_predictions(critic: FeatureCritic, store: ArtefactStore, rows: list[LabelRow], video_paths: dict[str, str],
                        settings: SelfSupervisedSettings) -> list[int | str | None]:
    """The feature critic's answer to each row in the row's terms: yes / no for plausibility, its 1-5 rating for
    critique; None (a parse failure) for a question it cannot answer (VQA)."""
    predictions: list[int | str | None] = []
    for row in rows:
        if row.task not in ("plausibility", "critique"):
            predictions.append(None)
            continue
        clip = labelled_clip(store, row, video_paths[row.label_id], settings)
        rating, p = critic.score_videos([(clip.frames, clip.fps)])[0]
        predictions.append(("yes" if p >= 0.5 else "no") if row.task == "plausibility" else int(round(rating)))
    return predictions


# The Reason critic watches a labelled video as critique_scores watches a candidate (its fps and frame cap), and is
# evaluated greedily: one deterministic answer per question, so base and tuned are compared on the same footing.
REASON_FPS, REASON_MAX_FRAMES = 16.0, 96
EVALUATION_SETTINGS = GenerationSettings(temperature=0.0, top_p=1.0, max_new_tokens=256, repetition_penalty=1.0, trials=1)


def reason_examples(store: ArtefactStore, rows: list[LabelRow], video_paths: dict[str, str],
                    fps: float = REASON_FPS, max_frames: int = REASON_MAX_FRAMES) -> list[CritiqueExample]:
    """SFT examples: each label's video sampled as inference samples it, asked exactly as inference asks (the
    critic's own prompts for critique and plausibility, the VQA prompt with lettered choices), answered in tags."""
    examples = []
    for row in rows:
        system, question = prompts_for(row)
        examples.append(CritiqueExample.from_video(store.local_path(video_paths[row.label_id]), target_text(row), fps=fps,
                                                   max_frames=max_frames, question=question, system=system))
    return examples


def reason_predictions(vlm, store: ArtefactStore, rows: list[LabelRow], video_paths: dict[str, str],
                       fps: float = REASON_FPS, max_frames: int = REASON_MAX_FRAMES) -> tuple[list, list[str]]:
    """(predictions in the rows' terms, the answer texts): the VLM's greedy answer to each row's question."""
    prompts = []
    for row in rows:
        system, question = prompts_for(row)
        sampled = sample_frames(store.local_path(video_paths[row.label_id]), fps, max_frames)
        prompts.append(VideoPrompt(sampled.frames, sampled.fps, question, system))
    texts = [answers[0] for answers in vlm.generate(prompts, EVALUATION_SETTINGS)] if prompts else []
    return [parse_prediction(row, text) for row, text in zip(rows, texts)], texts


def majority_predictions(train: list[LabelRow], test: list[LabelRow]) -> list[int | str | None]:
    """The baseline before any training: for each test row, the most common training answer of its task."""
    common = {}
    for task in {r.task for r in train}:
        answers = Counter(r.score if r.task == "critique" else r.answer for r in train if r.task == task)
        common[task] = sorted(answers.items(), key=lambda item: (-item[1], str(item[0])))[0][0]
    return [common.get(row.task) for row in test]


__all__ = ["LABELS_SCHEMA", "LabelRowError", "LabelledVideos", "VIDEO_SUFFIXES", "feature_examples",
           "feature_predictions", "landed_labels", "majority_predictions", "parse_landed", "plausible_label",
           "reason_examples", "reason_predictions", "self_supervised_labels"]
