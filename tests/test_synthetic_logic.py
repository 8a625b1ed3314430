"""The synthetic loop's plain logic on real sample clips: classical augmentations, the metric critic,
Reason / rubric answer parsing, rejection-sampling rules, and the inbox's manifests and ledger."""

import json
import os

import numpy as np
import pytest

from conftest import age_file
from cosmos_assets.common.drop_zone import OutsideDropZone
from cosmos_assets.curation.probe import VideoRejected
from cosmos_assets.synthetic import conditions
from cosmos_assets.synthetic.augment import augment, augmentation_parameters
from cosmos_assets.synthetic.critics import (
    MetricCritic, align_source, parse_rating, parse_verdict, reason_score, rubric_score,
)
from cosmos_assets.common.artefacts import LocalStore
from cosmos_assets.common.drop_zone import member_path
from cosmos_assets.synthetic.inbox import InboxLedger, ManifestInvalid, ingest_file, parse_manifest
from cosmos_assets.synthetic.selection import DEFAULT_THRESHOLDS, select
from cosmos_assets.synthetic.video import read_window, request_geometry, write_mp4

THRESHOLD = DEFAULT_THRESHOLDS["metric"]


@pytest.fixture(scope="module")
def dashcam(samples):
    """Two seconds of the real dashcam clip at candidate size (320 x 176, 29 frames at 16 fps)."""
    geometry = request_geometry(960, 540, 8.84, 320, 16, 2.0)
    return read_window(samples / "dashcam_solid_white_right.mp4", geometry)


@pytest.fixture(scope="module")
def signing(samples):
    geometry = request_geometry(640, 480, 2.97, 320, 16, 2.0)
    return read_window(samples / "asl_walk.mkv", geometry)


def test_request_geometry_fits_every_cosmos_generator():
    geometry = request_geometry(960, 540, 8.84, 320, 16, 2.0)
    assert (geometry.width, geometry.height, geometry.num_frames) == (320, 176, 29)
    assert request_geometry(640, 480, 0.5, 1280, 16, 5.8).as_dict() == {"width": 640, "height": 480, "fps": 16, "num_frames": 5}
    for width, height, seconds in [(1920, 1080, 10), (333, 777, 1.1), (100, 60, 0.2)]:
        g = request_geometry(width, height, seconds, 1280, 16, 5.8)
        assert g.width % 16 == g.height % 16 == 0 and (g.num_frames - 1) % 4 == 0 and g.num_frames <= 93


@pytest.mark.parametrize("condition", list(conditions.CONDITIONS))
def test_each_condition_is_a_deterministic_per_seed_augmentation_that_keeps_the_scene(condition, dashcam):
    frames, params = augment(dashcam, condition, seed=3, fps=16)
    again, _ = augment(dashcam, condition, seed=3, fps=16)
    other, other_params = augment(dashcam, condition, seed=4, fps=16)
    assert frames.shape == dashcam.shape and frames.dtype == np.uint8
    assert np.array_equal(frames, again) and params == augmentation_parameters(condition, 3)
    assert other_params != params and not np.array_equal(frames, other)
    assert np.abs(frames.astype(int) - dashcam).mean() > 5  # the condition is really there
    score = MetricCritic().score(frames, dashcam)
    assert score.score >= THRESHOLD and score.edge_f1 > 0.5  # and the scene's structure and motion are kept


def test_augmentations_hold_still_on_a_still_scene_and_move_smoothly():
    still = np.repeat(np.full((1, 96, 160, 3), 120, np.uint8), 9, axis=0)
    still[:, 40:60, 50:110] = 30  # something to see
    for condition in ("night", "dusk", "fog"):
        frames, params = augment(still, condition, seed=1, fps=16)
        changes = np.abs(np.diff(frames.astype(int), axis=0)).mean(axis=(1, 2, 3))
        # The grade is the same on every frame; fog patches drift with the wind, a little per frame.
        assert changes.max() < (2.0 if condition == "fog" else 1e-9), (condition, changes)
    rain, _ = augment(still, "rain", seed=1, fps=16)
    first_step = np.abs(rain[1].astype(int) - rain[0]).mean()
    assert 0 < first_step < np.abs(rain[8].astype(int) - rain[0]).mean() * 1.5  # streaks fall, they do not jump


def test_the_metric_critic_rejects_frozen_shuffled_and_blank_videos(dashcam, signing):
    critic = MetricCritic()
    for source in (dashcam, signing):
        good, _ = augment(source, "rain", seed=0, fps=16)
        broken = {
            "frozen": np.repeat(good[:1], len(good), axis=0),
            "shuffled": good[np.random.default_rng(0).permutation(len(good))],
            "blank": np.full_like(good, 128),
            "black": np.zeros_like(good),
        }
        good_score = critic.score(good, source)
        assert good_score.score >= THRESHOLD
        for name, frames in broken.items():
            score = critic.score(frames, source)
            assert score.score < THRESHOLD - 0.1, (name, score)
        assert critic.score(broken["frozen"], source).motion_fidelity < 0.2
        assert critic.score(broken["shuffled"], source).temporal_alignment < 0.5
        assert critic.score(broken["blank"], source).exposure == 0.0


def test_the_source_is_aligned_by_time_for_candidates_of_another_frame_rate(dashcam):
    aligned = align_source(dashcam, 16, 9, 4)  # a 4 fps candidate over two seconds
    assert [int(np.argmin([np.abs(a.astype(int) - f).sum() for f in dashcam])) for a in aligned] == [0, 4, 8, 12, 16, 20, 24, 28, 28]
    assert MetricCritic().score(dashcam[::4], aligned[:8]).score > 0.99
    assert MetricCritic().identity["critic_version"].startswith("metric-critic/1+")


def test_reason_trials_are_parsed_and_malformed_ones_counted_not_guessed():
    trials = [parse_verdict(t) for t in (
        "<think>The car drives straight.</think><answer>No</answer>",
        "<think>A truck flickers.</think> <answer> Yes, the truck flickers.</answer>",
        "<think>Format: <answer>Yes|No</answer>. Looks fine.</think><answer>no.</answer>",
        "<think>I am not sure what to say",  # cut off before answering
        "<answer>Maybe</answer>",
        "",
    )]
    assert [(t.parsed, t.answer) for t in trials] == [(True, "No"), (True, "Yes"), (True, "No"), (False, ""), (False, "Maybe"), (False, "")]
    assert trials[0].thinking == "The car drives straight." and trials[3].problem == "no <answer> tag"
    assert trials[4].problem == "answer is neither Yes nor No"
    assert reason_score(trials) == pytest.approx(2 / 3)  # share of No among the parsed trials only
    assert reason_score(trials[3:]) is None


def test_rubric_ratings_are_parsed_and_mapped_to_scores():
    trials = [parse_rating(t) for t in ("<answer>5</answer>", "<answer>4/5</answer>", "<answer>Score: 2 out of 5</answer>",
                                          "<answer>3 or 4</answer>", "<answer>7</answer>", "no tag 5")]
    assert [(t.parsed, t.answer) for t in trials] == [(True, "5"), (True, "4"), (True, "2"), (False, "3 or 4"), (False, "7"), (False, "")]
    score, mean = rubric_score(trials)
    assert mean == pytest.approx(11 / 3, abs=1e-4) and score == pytest.approx((11 / 3 - 1) / 4, abs=1e-4)


def _candidates(scores: dict[str, list]) -> list[dict]:
    return [{"candidate_id": f"{request}-{i}", "request_id": request, "score": s, "usable": s != "bad"}
            for request, values in scores.items() for i, s in enumerate(values)]


def _accepted(decisions) -> set[str]:
    return {d.candidate_id for d in decisions.values() if d.accepted}


def test_best_of_n_keeps_exactly_one_per_request_and_the_threshold_rule_can_join_it():
    candidates = [{**c, "score": None if c["score"] == "bad" else c["score"]}
                  for c in _candidates({"a": [0.9, 0.95], "b": [0.4, 0.3], "c": [0.8, 0.8], "d": [None, "bad"]})]
    best = select(candidates, "best_of_n", 0.7)
    assert _accepted(best) == {"a-1", "b-0", "c-0"}  # one per scored request; ties go to the smaller id
    both = select(candidates, "best_of_n_and_threshold", 0.7)
    assert _accepted(both) == {"a-1", "c-0"} and both["b-0"].reason == "below_threshold" and both["a-0"].reason == "not_best_in_request"
    assert _accepted(select(candidates, "threshold", 0.7)) == {"a-0", "a-1", "c-0", "c-1"}
    assert (both["d-0"].reason, both["d-1"].reason) == ("unscored", "bad_input")
    with pytest.raises(ValueError, match="expected one of"):
        select(candidates, "top_k", 0.5)


def test_templates_and_rewrites_give_a_prompt_per_condition():
    caption = "[signal caption, no VLM] A 8.8 s clip that looks like: trailer truck, car mirror; moderate motion."
    prompt = conditions.template_prompt(caption, "fog")
    assert prompt.startswith("A 8.8 s clip that looks like: trailer truck") and "fog" in prompt and "[signal" not in prompt
    assert "Thick fog" in prompt and conditions.negative_prompt("bad video.", "night").endswith("Daylight, sunshine, bright sky.")
    with pytest.raises(ValueError, match="unknown condition"):
        conditions.check_conditions(["rain", "hail"])
    ids = {conditions.request_id("clip", c, conditions.template_prompt(caption, c), "", {"w": 1}, {}) for c in conditions.CONDITIONS}
    assert len(ids) == len(conditions.CONDITIONS)


# --- the inbox -------------------------------------------------------------------------------------------


def test_manifests_are_parsed_with_problems_per_candidate():
    manifest = parse_manifest(json.dumps({"generator": "acme 3", "candidates": [
        {"file": "a.mp4", "request_id": "r1", "seed": 0, "source_clip_id": "c1", "condition": "rain"},
        {"file": "b.mp4", "request_id": "r1", "seed": "one", "source_clip_id": "c1"},
        {"request_id": "r2", "seed": 1},
        "not an object",
    ]}).encode())
    assert manifest.generator == "acme 3"
    first, bad_seed, missing, junk = manifest.entries
    assert (first.file, first.seed, first.condition, first.error_class) == ("a.mp4", 0, "rain", None)
    assert bad_seed.error_class == "ManifestEntryInvalid" and "seed 'one'" in bad_seed.error_message
    assert "missing file, source_clip_id" in missing.error_message and junk.error_class == "ManifestEntryInvalid"
    single = parse_manifest(b'{"file": "x.mp4", "request_id": "r", "seed": 2, "source_clip_id": "c"}')
    assert single.generator == "external" and single.entries[0].seed == 2
    for data in (b"\xff\xfe", b"[1, 2]", b'{"candidates": []}', b"{not json"):
        with pytest.raises(ManifestInvalid):
            parse_manifest(data)


def test_names_in_a_manifest_never_leave_its_folder():
    assert member_path(b"drop/7/manifest.json", "clip.mp4") == b"drop/7/clip.mp4"
    assert member_path(b"m.json", "sub/clip.mp4") == b"sub/clip.mp4"
    for name in ("../outside.mp4", "/etc/passwd", "a/../../b.mp4", "", "a\\..\\b", "nul\x00.mp4"):
        with pytest.raises(OutsideDropZone):
            member_path(b"drop/manifest.json", name)


def _drop(inbox, name, payload, files=()):
    inbox.mkdir(parents=True, exist_ok=True)
    for file_name, data in files:
        (inbox / file_name).write_bytes(data)
        age_file(inbox / file_name)
    (inbox / name).write_text(json.dumps(payload))
    return inbox / name


def test_the_ledger_takes_each_manifest_once_when_its_files_have_settled(tmp_path):
    inbox, ledger = tmp_path / "inbox", InboxLedger(tmp_path / "ledger.sqlite")
    entry = {"file": "a.mp4", "request_id": "r", "seed": 0, "source_clip_id": "c"}
    manifest = _drop(inbox, "one.json", {"candidates": [entry]})
    assert ledger.plan_batches(inbox, settle_seconds=60, missing_grace_seconds=300) == []  # not settled yet
    age_file(manifest, 100)
    assert ledger.plan_batches(inbox, 60, 300) == []  # settled, but its video is not there yet
    (inbox / "a.mp4").write_bytes(b"video bytes")
    assert ledger.plan_batches(inbox, 60, 300) == []  # the video is still being written
    age_file(inbox / "a.mp4")
    [batch] = ledger.plan_batches(inbox, 60, 300)
    assert batch.key.startswith("inbox-000001-") and json.loads(batch.manifest_bytes) == {"candidates": [entry]}
    assert ledger.plan_batches(inbox, 60, 300) == []  # exactly once
    copy = inbox / "copy.json"  # the same manifest under another name is the same batch
    copy.write_bytes(manifest.read_bytes())
    age_file(copy)
    assert ledger.plan_batches(inbox, 60, 300) == [] and ledger.batches_after(0) == [batch]
    assert InboxLedger(tmp_path / "ledger.sqlite").batch(batch.key) == batch  # survives a restart


def test_broken_manifests_and_missing_files_become_batches_that_say_why(tmp_path):
    inbox, ledger = tmp_path / "inbox", InboxLedger(tmp_path / "ledger.sqlite")
    inbox.mkdir()
    (inbox / "broken.json").write_text("{not json")
    age_file(inbox / "broken.json")
    os.symlink(tmp_path / "elsewhere.json", inbox / "link.json")
    late = _drop(inbox, "late.json", {"file": "never.mp4", "request_id": "r", "seed": 0, "source_clip_id": "c"})
    age_file(late, 10)
    batches = ledger.plan_batches(inbox, 5, missing_grace_seconds=600)
    assert {b.manifest_name: b.problem for b in batches} == {"broken.json": None, "link.json": "UnsafePath: symlinks are not followed"}
    age_file(late, 3600)  # past the grace period: taken, its missing file is recorded when ingested
    [taken] = ledger.plan_batches(inbox, 5, missing_grace_seconds=600)
    assert taken.manifest_name == "late.json"


def test_dropped_files_are_copied_by_content_and_bad_ones_rejected_with_their_class(tmp_path, dashcam):
    inbox, store = tmp_path / "inbox", LocalStore(tmp_path / "store")
    inbox.mkdir()
    write_mp4(inbox / "good.mp4", dashcam[:9], 16)
    (inbox / "notes.mp4").write_text("not a video")
    os.symlink(inbox / "good.mp4", inbox / "link.mp4")
    key_for = lambda digest: f"{digest}.mp4"  # noqa: E731
    ingested = ingest_file(inbox, b"good.mp4", store, key_for)
    assert ingested.path == str(tmp_path / "store" / f"{ingested.sha256}.mp4") and ingested.probe["frames"] == 9
    assert ingest_file(inbox, b"good.mp4", store, key_for, expected_sha256=ingested.sha256.upper()).path == ingested.path
    for name, expected_sha, error_class in [(b"notes.mp4", None, "NotAVideo"), (b"link.mp4", None, "UnsafePath"),
                                            (b"gone.mp4", None, "MissingFile"), (b"good.mp4", "0" * 64, "ChecksumMismatch")]:
        with pytest.raises(VideoRejected) as rejected:
            ingest_file(inbox, name, store, key_for, expected_sha256=expected_sha)
        assert rejected.value.error_class == error_class
    assert store.list("") == [f"{ingested.sha256}.mp4"]  # nothing else kept


def test_a_candidate_listed_twice_in_a_manifest_is_one_candidate_and_the_repeat_is_recorded(tmp_path, dashcam):
    """Issue 14.6: the same entry twice (and the same request and seed with another file) is one candidate, never
    two rows under one id in synthetic_videos (and so never two in critique_scores or four in accepted_videos)."""
    from types import SimpleNamespace

    from cosmos_assets.settings import CosmosPaths
    from cosmos_assets.synthetic.assets import GENERATION_PROMPTS, SYNTHETIC_VIDEOS, _ingest_inbox, _table

    entry = {"file": "a.mp4", "request_id": "r", "seed": 0, "source_clip_id": "c"}
    other_file = {**entry, "file": "b.mp4"}
    next_seed = {**entry, "seed": 1}
    manifest = parse_manifest(json.dumps({"candidates": [entry, entry, other_file, next_seed]}).encode())
    assert [(e.index, e.error_class) for e in manifest.entries] == [(0, None), (1, "DuplicateEntry"), (2, "DuplicateEntry"),
                                                                    (3, None)]
    assert "already candidate 0" in manifest.entries[1].error_message

    paths = CosmosPaths(tmp_path / "home")
    folder = paths.synthetic_inbox / "drop"
    _drop(folder, "manifest.json", {"candidates": [entry, entry, other_file, next_seed]})
    write_mp4(folder / "a.mp4", dashcam[:9], 16)
    write_mp4(folder / "b.mp4", dashcam[9:18], 16)
    for name in ("a.mp4", "b.mp4", "manifest.json"):
        age_file(folder / name)
    [batch] = InboxLedger(paths.synthetic_inbox_ledger).plan_batches(paths.synthetic_inbox, 5, 300)
    storage = SimpleNamespace(paths=paths, store=LocalStore(paths.home / "artefacts"))
    context = SimpleNamespace(partition_key=batch.key, log=SimpleNamespace(warning=lambda *_: None))
    requests = _table([{"request_id": "r", "round": batch.key, "seeds": [0, 1]}], GENERATION_PROMPTS)
    videos = _table(_ingest_inbox(context, storage, requests), SYNTHETIC_VIDEOS)
    assert videos["candidate_id"].n_unique() == videos.height == 4
    assert sorted(zip(videos["status"], videos["error_class"].fill_null(""))) == [
        ("ok", ""), ("ok", ""), ("rejected", "DuplicateEntry"), ("rejected", "DuplicateEntry")]
    assert sorted(videos.filter(videos["status"] == "ok")["seed"].to_list()) == [0, 1]


def test_identical_manifests_in_two_folders_are_two_drops_and_a_touched_one_stays_one(tmp_path, dashcam):
    """Issue 14.7: a drop is its manifest's folder and bytes together, not the bytes alone."""
    inbox, ledger = tmp_path / "inbox", InboxLedger(tmp_path / "ledger.sqlite")
    payload = {"candidates": [{"file": "a.mp4", "request_id": "r", "seed": 0, "source_clip_id": "c"}]}
    for folder, frames in (("monday", dashcam[:9]), ("tuesday", dashcam[9:18])):  # the same names, other videos
        (inbox / folder).mkdir(parents=True)
        write_mp4(inbox / folder / "a.mp4", frames, 16)
        age_file(_drop(inbox / folder, "manifest.json", payload))
        age_file(inbox / folder / "a.mp4")
    assert (inbox / "monday" / "manifest.json").read_bytes() == (inbox / "tuesday" / "manifest.json").read_bytes()
    batches = ledger.plan_batches(inbox, 60, 300)
    assert sorted(b.manifest_name for b in batches) == ["monday/manifest.json", "tuesday/manifest.json"]
    assert len({b.key for b in batches}) == 2 and len({b.manifest_hash for b in batches}) == 1
    os.utime(inbox / "monday" / "manifest.json")  # re-touched (and settled again): the same drop
    age_file(inbox / "monday" / "manifest.json", 100)
    assert ledger.plan_batches(inbox, 60, 300) == [] and len(ledger.batches_after(0)) == 2


def test_a_ledger_from_before_drops_had_folders_takes_the_drop_it_skipped(tmp_path, dashcam):
    """Issue 14.7: a ledger where the second folder's identical manifest was seen but skipped takes it after the upgrade."""
    import sqlite3

    inbox = tmp_path / "inbox"
    payload = {"candidates": [{"file": "a.mp4", "request_id": "r", "seed": 0, "source_clip_id": "c"}]}
    for folder in ("monday", "tuesday"):
        (inbox / folder).mkdir(parents=True)
        write_mp4(inbox / folder / "a.mp4", dashcam[:9], 16)
        age_file(inbox / folder / "a.mp4")
        age_file(_drop(inbox / folder, "manifest.json", payload))
    data = (inbox / "monday" / "manifest.json").read_bytes()
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.executescript("""CREATE TABLE seen_manifests (relative_path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL);
        CREATE TABLE batches (sequence INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE NOT NULL, manifest_path BLOB NOT NULL,
        manifest_hash TEXT UNIQUE, manifest_bytes BLOB, problem TEXT, created_at REAL NOT NULL);""")
    for folder in ("monday", "tuesday"):
        stat = os.stat(inbox / folder / "manifest.json")
        db.execute("INSERT INTO seen_manifests VALUES (?, ?, ?)", (f"{folder}/manifest.json".encode(), stat.st_size, stat.st_mtime_ns))
    db.execute("INSERT INTO batches VALUES (1, 'inbox-000001-old', ?, 'h', ?, NULL, 0)", (b"monday/manifest.json", data))
    db.commit()
    db.close()
    ledger = InboxLedger(tmp_path / "ledger.sqlite")
    [taken] = ledger.plan_batches(inbox, 60, 300)
    assert taken.manifest_name == "tuesday/manifest.json" and taken.key.startswith("inbox-000002-")
    assert [b.key for b in ledger.batches_after(0)] == ["inbox-000001-old", taken.key]
    assert InboxLedger(tmp_path / "ledger.sqlite").plan_batches(inbox, 60, 300) == []
