"""Multi-camera scenes: a scene folder lands as one unit, its views are curated on the same spans, generated with one
prompt, seed and weather, accepted together, measured for cross-view consistency, and keep their scene id."""

import json
import os
import shutil
import subprocess

import cv2
import numpy as np
import polars as pl
import pytest

from cosmos_assets.common.artefacts import LocalStore, table_key
from cosmos_assets.common.drop_zone import scan_drop_zone
from cosmos_assets.curation import scenes
from cosmos_assets.curation.landing import LandingLedger
from cosmos_assets.curation.pipeline import ingest_member
from cosmos_assets.curation.probe import ProbeLimits
from cosmos_assets.settings import CosmosPaths
from cosmos_assets.synthetic.multiview import scene_consistency
from cosmos_assets.synthetic.selection import BELOW_THRESHOLD, select_scenes
from cosmos_assets.synthetic.video import read_video, write_mp4
from conftest import age_file
from test_cosmos_run import COSMOS, cosmos_run

CAMERAS = ("front_center", "front_left", "front_right")


@pytest.fixture(scope="module")
def rig(samples):
    """The shipped sample scene: camera -> frames, and its frame rate."""
    views = {camera: read_video(samples / "dashcam_rig" / f"{camera}.mp4") for camera in CAMERAS}
    return {camera: frames for camera, (frames, _) in views.items()}, views["front_center"][1]


def write_scene(folder, views: dict, fps: dict | float, manifest: dict | bytes | None = None, crf: int = 28):
    """A scene folder: one MP4 per camera (frames, at its rate) and scene.json (written last, as an uploader should)."""
    folder.mkdir(parents=True)
    for camera, frames in views.items():
        write_mp4(folder / f"{camera}.mp4", frames, fps[camera] if isinstance(fps, dict) else fps, crf=crf)
    if manifest is None:
        manifest = {"scene": folder.name, "cameras": {c: f"{c}.mp4" for c in views}}
    (folder / "scene.json").write_bytes(manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode())


def land(tmp_path, build) -> list[dict]:
    """Land what ``build(landing)`` puts in a fresh landing zone and ingest every batch as raw_videos does."""
    landing, store = tmp_path / "landing", LocalStore(tmp_path / "store")
    build(landing)
    ledger = LandingLedger(tmp_path / "ledger.sqlite")
    batches = ledger.plan_batches(landing, scenes.hold_back_unsettled_scenes(scan_drop_zone(landing, 0)), 100, 1 << 30)
    rows = []
    for batch in batches:
        members = list(batch.members)
        batch_rows = [scenes.manifest_row(m, batch.key) if scenes.is_scene_manifest(m.relative_path)
                      else ingest_member(m, batch.key, landing, store, ProbeLimits()) for m in members]
        rows += scenes.assemble_scenes(members, batch_rows, landing)
    return rows


def by_name(rows):
    return {row["landing_name"]: row for row in rows}


# --- the manifest -----------------------------------------------------------------------------------------------


def test_a_manifest_names_cameras_and_their_files_and_the_reference_camera():
    manifest = scenes.parse_scene_manifest(json.dumps(
        {"scene": "crossing", "cameras": {"front": "f.mp4", "left": "l.mp4"}, "reference_camera": "left", "rig": {"baseline_m": 0.5}}).encode())
    assert manifest.files == {"front": "f.mp4", "left": "l.mp4"}
    assert (manifest.name, manifest.reference_camera, manifest.rig) == ("crossing", "left", {"baseline_m": 0.5})
    assert scenes.parse_scene_manifest(b'{"cameras": {"b": "b.mp4", "a": "a.mp4"}}').reference_camera == "b"  # the first


@pytest.mark.parametrize("manifest, complaint", [
    (b"{not json", "JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"cameras": {"only": "one.mp4"}}', "2 to"),
    (b'{"cameras": {"a": "../a.mp4", "b": "b.mp4"}}', "leaves"),
    (b'{"cameras": {"a": "/etc/passwd", "b": "b.mp4"}}', "leaves"),
    (b'{"cameras": {"a": "sub/a.mp4", "b": "b.mp4"}}', "directly beside"),
    (b'{"cameras": {"a": "same.mp4", "b": "same.mp4"}}', "same file"),
    (b'{"cameras": {"a b": "a.mp4", "b": "b.mp4"}}', "camera name"),
    (b'{"cameras": {"a": "a.mp4", "b": "b.mp4"}, "reference_camera": "c"}', "reference_camera"),
])
def test_a_broken_manifest_is_a_bad_scene_manifest_saying_what_is_wrong(manifest, complaint):
    with pytest.raises(scenes.SceneProblem) as caught:
        scenes.parse_scene_manifest(manifest)
    assert caught.value.error_class == "BadSceneManifest" and complaint in caught.value.message


# --- landing ----------------------------------------------------------------------------------------------------


def test_a_scene_folder_lands_in_one_batch_with_a_content_derived_scene_id(tmp_path, rig):
    views, fps = rig

    def build(landing):
        write_scene(landing / "rig_a", views, fps)
        shutil.copytree(landing / "rig_a", landing / "z_copy")  # the same footage under another folder name, after it

    ledger_rows = land(tmp_path, build)
    rows = by_name(ledger_rows)
    assert {r["batch"] for r in ledger_rows} == {ledger_rows[0]["batch"]}
    assert rows["rig_a/scene.json"]["status"] == "scene"
    scene = rows["rig_a/scene.json"]["scene_id"]
    for camera in CAMERAS:
        view = rows[f"rig_a/{camera}.mp4"]
        assert (view["status"], view["scene_id"], view["camera"]) == ("ok", scene, camera)
    assert scene == scenes.scene_id_of({c: rows[f"rig_a/{c}.mp4"]["content_hash"] for c in CAMERAS})
    # The copy's videos are bytes already landed (ingested once), so the copy's scene is missing its views.
    copy = rows["z_copy/scene.json"]
    assert (copy["status"], copy["error_class"]) == ("rejected", "SceneViewMissing") and "landed before" in copy["error_message"]


def test_scenes_that_break_a_rule_get_their_error_class_on_every_row_and_the_rest_lands(tmp_path, rig, samples):
    views, fps = rig
    two = {c: views[c] for c in CAMERAS[:2]}

    def build(landing):
        write_scene(landing / "good", views, fps)
        write_scene(landing / "missing", two, fps, crf=30,
                    manifest={"cameras": {c: f"{c}.mp4" for c in CAMERAS}})
        write_scene(landing / "lengths", {CAMERAS[0]: views[CAMERAS[0]], CAMERAS[1]: views[CAMERAS[1]][:-5]}, fps, crf=31)
        write_scene(landing / "rates", two, {CAMERAS[0]: fps, CAMERAS[1]: 10.0}, crf=32)
        write_scene(landing / "bad_manifest", two, fps, manifest=b'{"cameras": ', crf=33)
        write_scene(landing / "broken_view", two, fps, crf=34)
        (landing / "broken_view" / f"{CAMERAS[1]}.mp4").write_bytes(b"not a video at all" * 100)
        write_scene(landing / "extra", two, fps, crf=35)
        (landing / "extra" / "notes.mp4").write_bytes((landing / "extra" / f"{CAMERAS[0]}.mp4").read_bytes()[:-1])
        (landing / "extra" / "old").mkdir()  # the same name as a camera's file, one folder down
        (landing / "extra" / "old" / f"{CAMERAS[1]}.mp4").write_bytes((landing / "extra" / f"{CAMERAS[0]}.mp4").read_bytes()[:-2])
        shutil.copy(samples / "asl_book.mkv", landing / "asl_book.mkv")
        (landing / "scene.json").write_text('{"cameras": {"a": "asl_book.mkv", "b": "x.mp4"}}')  # not in a folder of its own

    rows = by_name(land(tmp_path, build))
    expected = {"missing": "SceneViewMissing", "lengths": "SceneLengthMismatch", "rates": "SceneFrameRateMismatch",
                "bad_manifest": "BadSceneManifest", "broken_view": "SceneViewRejected"}
    for folder, error_class in expected.items():
        scene_rows = [r for name, r in rows.items() if name.startswith(folder + "/")]
        assert scene_rows and all(r["status"] == "rejected" for r in scene_rows), folder
        manifest = rows[f"{folder}/scene.json"]
        assert manifest["error_class"] == error_class and folder in manifest["error_message"], manifest
    assert {r["error_class"] for n, r in rows.items() if n.startswith("missing/")} == {"SceneViewMissing"}
    assert "front_right" in rows["missing/scene.json"]["error_message"]
    assert "frames" in rows["lengths/scene.json"]["error_message"] and "fps" in rows["rates/scene.json"]["error_message"]
    # A view broken in itself keeps its own class; its sibling and the manifest name the broken camera.
    assert rows[f"broken_view/{CAMERAS[1]}.mp4"]["error_class"] not in scenes.SCENE_ERRORS
    assert CAMERAS[1] in rows[f"broken_view/{CAMERAS[0]}.mp4"]["error_message"]
    # A file the manifest does not name is set aside; the scene itself is whole and lands.
    assert rows["extra/notes.mp4"]["error_class"] == rows[f"extra/old/{CAMERAS[1]}.mp4"]["error_class"] == "NotInSceneManifest"
    assert rows["extra/scene.json"]["status"] == "scene" and rows[f"extra/{CAMERAS[0]}.mp4"]["status"] == "ok"
    assert rows["good/scene.json"]["status"] == "scene" and rows["asl_book.mkv"]["status"] == "ok"
    assert rows["scene.json"]["error_class"] == "BadSceneManifest" and rows["asl_book.mkv"].get("scene_id") is None


def test_a_scene_waits_until_every_file_in_its_folder_has_settled(tmp_path, rig):
    views, fps = rig
    landing = tmp_path / "landing"
    write_scene(landing / "rig", views, fps)
    for path in (landing / "rig").iterdir():
        if path.name != f"{CAMERAS[2]}.mp4":
            age_file(path, 600)
    scan = scan_drop_zone(landing, settle_seconds=60)
    assert [e.name for e in scan.unsettled] == [f"rig/{CAMERAS[2]}.mp4"] and len(scan.settled) == 3
    assert scenes.hold_back_unsettled_scenes(scan) == []


def test_a_scene_is_never_split_across_batches_even_when_batches_are_small(tmp_path, rig, samples):
    views, fps = rig

    def build(landing):
        write_scene(landing / "rig", views, fps)
        shutil.copy(samples / "asl_book.mkv", landing / "asl_book.mkv")

    landing, ledger = tmp_path / "landing", LandingLedger(tmp_path / "ledger.sqlite")
    build(landing)
    batches = ledger.plan_batches(landing, scan_drop_zone(landing, 0).settled, max_files=1, max_bytes=1 << 30)
    rig_batches = {b.key for b in batches for m in b.members if m.name.startswith("rig/")}
    assert len(rig_batches) == 1 and len(batches) == 2


# --- aligned curation -------------------------------------------------------------------------------------------


def clip(scene_clip, camera, scene="s1"):
    return {"scene_id": scene, "camera": camera, "scene_clip_id": scene_clip}


def test_one_failing_view_rejects_every_view_of_its_scene_clip_and_a_missing_view_too():
    clips = [clip("k1", "a"), clip("k1", "b"), clip("k2", "a"), clip("k2", "b"), clip("k3", "a"),
             {"scene_id": None, "camera": None, "scene_clip_id": None}]
    reasons = [[], ["blurry: 3.0 < 20"], [], [], [], []]
    judged = scenes.unit_rejections(clips, reasons)
    assert judged[0] == ["scene_view_failed: b"] and judged[1] == ["blurry: 3.0 < 20"]
    assert judged[2] == judged[3] == []
    assert judged[4] == ["scene_view_absent: b"]  # camera b has no clip on k3's span
    assert judged[5] == []


def test_views_of_a_scene_clip_never_drop_each_other_and_a_scene_clip_drops_only_as_a_whole():
    scene_clip_of = {"a1": "k1", "b1": "k1", "a2": "k2", "b2": "k2"}
    ids = ["x", "a1", "b1", "a2", "b2", "y"]
    # b1 "duplicates" its own sibling; a2 duplicates outside footage but b2 does not; y duplicates b1.
    kept, undone = scenes.unit_dedup(scene_clip_of, ids, [None, None, "a1", "x", None, "b1"])
    assert kept == [None, None, None, None, None, "b1"] and set(undone) == {"b1", "a2"}
    # Every view of k2 is a copy of outside footage: the scene clip is dropped whole.
    kept, undone = scenes.unit_dedup(scene_clip_of, ids, [None, None, None, "x", "x", None])
    assert kept == [None, None, None, "x", "x", None] and undone == []


def test_a_limit_on_source_clips_takes_whole_scene_clips():
    clips = [{"clip_id": "1", **clip("k", "a")}, {"clip_id": "2", "scene_clip_id": None}, {"clip_id": "3", **clip("k", "b")}]
    assert [c["clip_id"] for c in scenes.first_units(clips, 1)] == ["1", "3"]
    assert [c["clip_id"] for c in scenes.first_units(clips, 2)] == ["1", "2", "3"]


# --- selection --------------------------------------------------------------------------------------------------


def view(candidate, camera, seed, score, usable=True):
    return {"candidate_id": candidate, "request_id": f"request-{camera}", "scene_key": "k1/rain", "seed": seed,
            "camera": camera, "scene_cameras": 2, "score": score, "usable": usable}


def test_a_scene_candidate_is_accepted_only_if_all_its_views_are():
    decisions = select_scenes([view("a0", "a", 0, 0.95), view("b0", "b", 0, 0.5), view("a1", "a", 1, 0.8),
                               view("b1", "b", 1, 0.75), {"candidate_id": "single", "request_id": "r", "score": 0.9}],
                              "best_of_n_and_threshold", 0.7)
    assert decisions["a1"].accepted and decisions["b1"].accepted and decisions["single"].accepted
    assert not decisions["a0"].accepted and decisions["a0"].reason == "scene_view_not_accepted"
    assert not decisions["b0"].accepted and decisions["b0"].reason == BELOW_THRESHOLD
    threshold_only = select_scenes([view("a0", "a", 0, 0.95), view("b0", "b", 0, 0.5)], "threshold", 0.7)
    assert not any(d.accepted for d in threshold_only.values())


def test_a_scene_candidate_missing_a_view_or_with_an_unusable_view_is_not_accepted():
    decisions = select_scenes([view("a0", "a", 0, 0.9)], "best_of_n", 0.7)
    assert decisions["a0"].reason == "scene_incomplete" and not decisions["a0"].accepted
    decisions = select_scenes([view("a0", "a", 0, 0.9), view("b0", "b", 0, None, usable=False)], "best_of_n", 0.7)
    assert not decisions["a0"].accepted and decisions["b0"].reason == "bad_input"


# --- cross-view consistency -------------------------------------------------------------------------------------


def test_two_crops_of_one_video_keep_their_geometry_and_a_view_from_another_scene_does_not(samples):
    frames, _ = read_video(samples / "dashcam_solid_white_right.mp4", max_frames=8)
    left = frames[:, 60:420, 100:580]
    right = frames[:, 60:420, 300:780]  # the same frames seen 200 px further right: a known translation
    source = {"left": left, "right": right}
    # The generated views: the same crops, re-rendered darker and noisier (what a weather pass does to pixels).
    rng = np.random.default_rng(0)
    regenerated = {k: np.clip(v * 0.8 + rng.normal(0, 3, v.shape), 0, 255).astype(np.uint8) for k, v in source.items()}
    same = scene_consistency(source, regenerated)
    assert same["sampson_px"] < 1.0 and same["share_under_threshold"] > 0.8 and same["match_ratio"] > 0.5
    other, _ = read_video(samples / "bottle_conveyor.mp4", max_frames=8)
    swapped = {"left": regenerated["left"], "right": cv2.resize(other[0], (480, 360))[None].repeat(len(left), 0)}
    different = scene_consistency(source, swapped)
    assert different["match_ratio"] < 0.2
    assert different["sampson_px"] is None or different["sampson_px"] > 5 * max(same["sampson_px"], 0.5)
    assert different["share_under_threshold"] < 0.3


# --- end to end -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flywheel(tmp_path_factory, samples, rig):
    views, fps = rig
    paths = CosmosPaths(tmp_path_factory.mktemp("multicamera") / "home")
    paths.landing.mkdir(parents=True)
    shutil.copytree(samples / "dashcam_rig", paths.landing / "dashcam_rig")
    write_scene(paths.landing / "out_of_step", {c: views[c] for c in CAMERAS[:2]},
                {CAMERAS[0]: fps, CAMERAS[1]: fps / 2}, crf=33)
    summary = cosmos_run(paths, timeout=1500)
    return paths, summary


def tables(paths, asset):
    return LocalStore(paths.home).read_partitions(asset)


def test_a_landed_scene_is_curated_on_aligned_spans_beside_a_broken_one(flywheel):
    paths, summary = flywheel
    raw = tables(paths, "raw_videos")
    broken = raw.filter(pl.col("landing_name").str.starts_with("out_of_step/"))
    assert set(broken["status"]) == {"rejected"} and set(broken["error_class"]) == {"SceneFrameRateMismatch"}
    views = raw.filter(pl.col("landing_name").str.starts_with("dashcam_rig/") & (pl.col("status") == "ok"))
    assert sorted(views["camera"]) == sorted(CAMERAS) and views["scene_id"].n_unique() == 1
    clips = tables(paths, "video_clips").filter(pl.col("scene_id").is_not_null())
    assert clips.height >= len(CAMERAS)
    for (scene_clip,), group in clips.group_by("scene_clip_id"):
        assert sorted(group["camera"]) == sorted(CAMERAS)
        assert group["start_frame"].n_unique() == 1 and group["end_frame"].n_unique() == 1
    dataset = LocalStore(paths.home).read_parquet(table_key("curated_dataset", None))
    members = dataset.filter(pl.col("scene_id").is_not_null())
    for (scene_clip,), group in members.group_by("scene_clip_id"):
        assert group.height == len(CAMERAS) and group["split"].n_unique() == 1


def test_every_view_of_a_scene_clip_is_generated_with_one_prompt_seed_and_weather(flywheel):
    paths, _ = flywheel
    requests = tables(paths, "generation_prompts").filter(pl.col("scene_clip_id").is_not_null())
    assert requests.height
    for _, group in requests.group_by("scene_clip_id", "condition"):
        assert sorted(group["camera"]) == sorted(CAMERAS)
        assert group["prompt"].n_unique() == 1 and group["controls"].n_unique() == 1
        assert len({tuple(s) for s in group["seeds"]}) == 1
    candidates = tables(paths, "synthetic_videos").filter(pl.col("scene_clip_id").is_not_null() & (pl.col("status") == "ok"))
    for _, group in candidates.group_by("scene_clip_id", "condition", "seed"):
        assert group.height == len(CAMERAS)
        # The classical backend's weather: the same parameters drawn from the same seed for every camera.
        assert len({json.dumps(json.loads(s)["parameters"], sort_keys=True) for s in group["settings"]}) == 1


def test_scene_candidates_are_accepted_whole_with_cross_view_consistency_and_scene_id_in_lineage(flywheel):
    paths, summary = flywheel
    accepted = tables(paths, "accepted_videos").filter(pl.col("scene_clip_id").is_not_null())
    assert accepted.height
    for _, group in accepted.group_by("scene_clip_id", "condition", "seed"):
        assert group["accepted"].n_unique() == 1  # all views or none
        assert group["cross_view_sampson_px"].n_unique() == 1 and group["cross_view_pairs"][0]
        pairs = json.loads(group["cross_view_pairs"][0])
        assert {(p["camera_a"], p["camera_b"]) for p in pairs} <= {("front_center", "front_left"),
                                                                  ("front_center", "front_right"), ("front_left", "front_right")}
    winners = accepted.filter(pl.col("accepted"))
    assert winners.height >= len(CAMERAS) and winners.height % len(CAMERAS) == 0
    candidate = winners.row(0, named=True)
    env = {**os.environ, "COSMOS_HOME": str(paths.home), "DAGSTER_HOME": str(paths.dagster_home)}
    result = subprocess.run([COSMOS, "lineage", candidate["candidate_id"], "--json"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout)
    assert found["kind"] == "synthetic candidate" and found["scene_id"] == candidate["scene_id"]
    assert found["camera"] == candidate["camera"] and found["candidate"]["accepted"]
    assert found["clips"] == [candidate["source_clip_id"]]
    critique = [r for r in summary["runs"] if r["job"] == "critique_job"]
    assert critique and all(r["status"] == "SUCCESS" for r in critique)
