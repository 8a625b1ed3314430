"""The text-to-image loop's definitions: prompts, Predict2 Text2Image candidates, image critique, best-of-N and the
detector export, one partition of ``generation_rounds`` per round (merged in ``cosmos_assets.definitions``)."""

import dagster as dg

from cosmos_assets.text_to_image.assets import (
    accepted_images,
    accepted_images_rates_in_bounds,
    image_critique_scores,
    image_detector_export,
    image_prompts,
    synthetic_images,
    text_to_image_job,
)

defs = dg.Definitions(
    assets=[image_prompts, synthetic_images, image_critique_scores, accepted_images, image_detector_export],
    asset_checks=[accepted_images_rates_in_bounds],
    jobs=[text_to_image_job],
)
