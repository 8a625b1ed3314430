"""The critic loop's definitions: label drops, the training set, the critic checkpoint, its evaluation against the
base (with the blocking check) and promotion (merged in ``cosmos_assets.definitions``)."""

import dagster as dg

from cosmos_assets.critic_training.assets import (
    critic_checkpoint,
    critic_evaluation,
    critic_labels,
    critic_labels_job,
    critic_no_worse_than_base,
    critic_training_job,
    critic_training_set,
    promoted_critic,
)

defs = dg.Definitions(
    assets=[critic_labels, critic_training_set, critic_checkpoint, critic_evaluation, promoted_critic],
    asset_checks=[critic_no_worse_than_base],
    jobs=[critic_labels_job, critic_training_job],
)
