"""The one ``Definitions`` object of the project (``workspace.yaml`` points here)."""


import os

import dagster as dg

from cosmos_assets.curation.assets import curation_job, filtered_clips, raw_videos, video_clips_and_scores
from cosmos_assets.settings import cosmos_home, cosmos_profile
from resources import CosmosStorage, ParquetTableIOManager, ShotDetectorResource
from sensors import LandingZoneSettings, landing_zone_sensor


def build_definitions(profile: str | None = None) -> dg.Definitions:
    profile = profile or cosmos_profile()
    home = str(cosmos_home())
    # Locally every step of a run shares one process, so a model is loaded once per run;
    # the k8s profile gives each step its own pod instead.
    executor = dg.in_process_executor if profile in ("local", "gpu") else dg.multiprocess_executor
    return dg.Definitions(
        assets=[raw_videos, video_clips_and_scores, filtered_clips],
        jobs=[curation_job],
        sensors=[landing_zone_sensor],
        executor=executor,
        resources={
            "io_manager": ParquetTableIOManager(home=home),
            "storage": CosmosStorage(home=home),
            "shot_detector": ShotDetectorResource(device=os.environ.get("COSMOS_DEVICE", "auto")),
            "landing_zone": LandingZoneSettings(
                settle_seconds=float(os.environ.get("COSMOS_SETTLE_SECONDS", "10")),
            ),
        },
    )


defs = build_definitions()
