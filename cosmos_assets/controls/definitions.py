"""The controls' definitions: ``clip_controls`` per generation round (merged in ``cosmos_assets.definitions``)."""

import dagster as dg

from cosmos_assets.controls.assets import clip_controls

defs = dg.Definitions(assets=[clip_controls])
