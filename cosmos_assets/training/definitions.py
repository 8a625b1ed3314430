"""Training's definitions: the training mix, post-training or an inbox checkpoint, evaluation and promotion,
one partition per training run (merged in ``cosmos_assets.definitions``)."""

import dagster as dg

from cosmos_assets.training.assets import (
    checkpoint_evaluation,
    checkpoint_inbox_job,
    evaluation_job,
    generator_checkpoint,
    inbox_checkpoint,
    no_worse_than_base,
    promoted_checkpoint,
    training_dataset,
    training_job,
)

defs = dg.Definitions(
    assets=[training_dataset, generator_checkpoint, inbox_checkpoint, checkpoint_evaluation, promoted_checkpoint],
    asset_checks=[no_worse_than_base],
    jobs=[training_job, evaluation_job, checkpoint_inbox_job],
)
