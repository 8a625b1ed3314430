"""End to end, as a user runs it: `cosmos demo` (Dagster webserver + daemon), its sensor, its UI.

One real `cosmos demo` serves the whole module. The tests read as the specification of what a
user sees after starting it:

1. the demo's sample videos are curated by sensor-started `curation_job` runs that succeed (the smallest
   alone first, then the other four), and `video_clips` carries a contact sheet of clip thumbnails;
2. the UI (a real browser) shows the four contract assets and renders that contact sheet;
3. a video dropped later into a nested folder of the landing zone is curated by exactly one new run.

Helpers live in tests/ui_support.py. The screenshot goes to tests/artifacts/ui_video_clips.png.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: tests/ is not on sys.path
import ui_support as ui  # noqa: E402

pytestmark = pytest.mark.slow

CONTRACT_ASSETS = ("raw_videos", "video_clips", "clip_scores", "filtered_clips")
SAMPLE_BATCH_TIMEOUT_S = 300  # ~1-2 min of TransNetV2 on this CPU, more when the machine is busy
NEW_BATCH_TIMEOUT_S = 240
ARTIFACTS = Path(__file__).parent / "artifacts"


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> ui.DemoServer:
    """`cosmos demo` on a free port with a fresh COSMOS_HOME, in its own process group.

    Afterwards the whole group is stopped (SIGTERM, SIGKILL as a last resort) and nothing of it
    may survive.
    """
    home = tmp_path_factory.mktemp("cosmos_demo") / "cosmos_home"
    server = ui.start_cosmos_demo(home, settle_seconds=1)
    yield server
    outcome = ui.stop_process_group(server.process)
    if outcome["needed_sigkill"]:
        warnings.warn(f"cosmos demo outlived SIGTERM by 30 s; SIGKILLed {outcome['needed_sigkill']}")
    assert not outcome["survivors"], f"processes of the demo survived SIGKILL: {outcome['survivors']}"
    assert ui.live_processes_in_group(server.pgid) == []


@pytest.fixture(scope="module")
def sample_batch_run(demo) -> dict:
    """The first curation_job run the sensor starts for the demo's sample videos, once succeeded."""

    def succeeded_run():
        runs = ui.curation_runs(demo)
        ui.assert_no_failed_run(demo, runs)
        return next((r for r in runs if r["status"] == "SUCCESS"), None)

    return ui.wait_until(
        succeeded_run,
        timeout=SAMPLE_BATCH_TIMEOUT_S,
        interval=3,
        what="a successful curation_job run for the demo's sample batch",
        on_timeout=demo.log_tail,
    )


# --------------------------------------------------------------------------------------------
# 1. The demo curates its sample videos
# --------------------------------------------------------------------------------------------


def test_demo_lands_samples_and_their_batch_run_succeeds(demo, sample_batch_run, samples):
    landed = {p.name for p in (demo.landing / "samples").iterdir()}
    assert {p.name for p in samples.iterdir() if p.suffix in (".mp4", ".mkv")} <= landed

    # The demo holds the runner lock for its daemon's life, so a `cosmos run` beside it defers to the daemon.
    import fcntl

    with open(demo.home / "dagster" / ".cosmos-runner.lock") as lock, pytest.raises(BlockingIOError):
        fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)

    run = sample_batch_run
    assert run["tags"]["dagster/sensor_name"] == "landing_zone_sensor"
    assert run["tags"]["dagster/run_key"] == run["partition"]  # one run per batch, keyed by it

    # The smallest sample lands alone in the first batch, so its clips are in the UI after one short run: the
    # multi-camera scene (three small views, a unit never split across batches); the five single videos follow in a
    # second batch, curated beside it.
    def all_samples_curated():
        runs = ui.curation_runs(demo)
        ui.assert_no_failed_run(demo, runs)
        done = {r["partition"]: ui.materializations(demo, "raw_videos", r["partition"]) for r in runs if r["status"] == "SUCCESS"}
        ok = {p: m[0]["metadata"]["ok"] for p, m in done.items() if m}
        return ok if sum(ok.values()) == 8 else None

    ok_by_batch = ui.wait_until(all_samples_curated, timeout=SAMPLE_BATCH_TIMEOUT_S, interval=3,
                                what="all samples curated (five videos and a scene of three views)", on_timeout=demo.log_tail)
    assert [ok_by_batch[p] for p in sorted(ok_by_batch)] == [3, 5], ok_by_batch

    clips = ui.materializations(demo, "video_clips", run["partition"])
    assert clips, f"video_clips has no materialization for {run['partition']}"
    assert clips[0]["runId"] == run["runId"]
    assert clips[0]["metadata"]["clips"] >= 1
    assert "data:image/jpeg;base64," in clips[0]["metadata"]["contact_sheet"]

    for asset in ("clip_scores", "filtered_clips"):
        assert ui.materializations(demo, asset, run["partition"]), f"{asset} not materialized"


# --------------------------------------------------------------------------------------------
# 2. The UI shows the assets and the contact sheet
# --------------------------------------------------------------------------------------------


def test_browser_shows_assets_and_the_video_clips_contact_sheet(demo, sample_batch_run, tmp_path):
    if not ui.CHROMIUM.exists():
        pytest.skip(f"no chromium at {ui.CHROMIUM} (Playwright's own browser download is unavailable here)")
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "ui_video_clips.png"

    with sync_api.sync_playwright() as playwright:
        browser = ui.launch_chromium(playwright, tmp_path / "chromium-profile")
        try:
            page = browser.new_page()
            # Tall enough that the catalog's list (drawn only where it is on screen) shows every asset.
            page.set_viewport_size({"width": 1400, "height": 3600})
            page.set_default_timeout(30_000)

            # The lineage graph upstream of filtered_clips shows the four contract assets. (With several
            # groups the global graph starts collapsed by group, so the asset's own lineage view is used.)
            page.goto(f"{demo.url}/assets/filtered_clips?view=lineage&lineageScope=upstream&lineageDepth=3")
            ui.dismiss_community_dialog(page)
            for asset in CONTRACT_ASSETS:
                expect(page.get_by_text(asset, exact=True).first).to_be_visible(timeout=30_000)

            # So does the catalog, each asset linking to its page.
            page.get_by_role("link", name="Catalog").click()
            expect(page).to_have_url(f"{demo.url}/assets")
            for asset in CONTRACT_ASSETS:
                expect(page.locator(f'a[href="/assets/{asset}"]')).to_be_visible(timeout=30_000)

            # video_clips' page lists the latest materialization's metadata; its contact sheet
            # opens as rendered markdown: a JPEG embedded as a data URI.
            page.locator('a[href="/assets/video_clips"]').click()
            expect(page).to_have_url(f"{demo.url}/assets/video_clips")
            contact_sheet_row = page.locator("tr").filter(has=page.get_by_text("contact_sheet", exact=True))
            contact_sheet_row.get_by_text("[Show Markdown]").click()
            image = page.get_by_role("dialog").locator('img[src^="data:image/jpeg;base64,"]')
            expect(image).to_be_visible()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            width, height = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            assert width >= 160 and height >= 90, (width, height)  # at least one thumbnail tile

            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000


# --------------------------------------------------------------------------------------------
# 3. A video dropped later, into a nested folder, gets exactly one new run
# --------------------------------------------------------------------------------------------


def test_video_dropped_in_nested_folder_is_curated_by_exactly_one_new_run(demo, sample_batch_run, samples):
    runs_before = {r["runId"] for r in ui.curation_runs(demo)}
    partitions_before = {r["partition"] for r in ui.curation_runs(demo)}

    # New bytes (the same pictures re-muxed from MKV into MP4), landed atomically, three folders deep.
    relative = Path("site_a/2026/cam1/new.mp4")
    new_video = ui.land_atomically(
        demo.landing / relative, lambda partial: ui.remux_to_mp4(samples / "asl_walk.mkv", partial)
    )
    assert _sha256(new_video) not in {_sha256(p) for p in samples.iterdir() if p.is_file()}

    def new_runs():
        runs = [r for r in ui.curation_runs(demo) if r["runId"] not in runs_before]
        ui.assert_no_failed_run(demo, runs)
        return runs

    succeeded = ui.wait_until(
        lambda: [r for r in new_runs() if r["status"] == "SUCCESS"],
        timeout=NEW_BATCH_TIMEOUT_S,
        interval=2,
        what=f"a successful curation_job run for {relative}",
        on_timeout=demo.log_tail,
    )
    assert len(succeeded) == 1, succeeded
    run = succeeded[0]
    assert run["partition"] not in partitions_before
    assert run["tags"]["dagster/run_key"] == run["partition"]

    videos = ui.materializations(demo, "raw_videos", run["partition"])[0]["metadata"]
    assert videos["ok"] == 1 and videos["rejected"] == 0, videos
    assert f"`{relative}`" in videos["files"]  # named (verbatim, as code) by its path below the landing zone
    clips = ui.materializations(demo, "video_clips", run["partition"])[0]["metadata"]
    assert clips["clips"] >= 1 and "data:image/jpeg;base64," in clips["contact_sheet"]

    # The sensor keeps ticking (every 5 s) and does not request the same file again.
    finished_at = run["endTime"]
    ui.wait_until(
        lambda: len([t for t in ui.sensor_ticks(demo) if t["timestamp"] > finished_at]) >= 2,
        timeout=60,
        interval=2,
        what="two landing_zone_sensor ticks after the run finished",
        on_timeout=demo.log_tail,
    )
    assert [r["runId"] for r in new_runs()] == [run["runId"]]


# --------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
