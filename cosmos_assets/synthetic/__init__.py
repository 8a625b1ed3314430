"""Synthetic data: generation prompts, candidate videos, critique and rejection sampling.

Plain, Dagster-free modules: ``conditions`` (prompts per augmentation condition and the classical CPU
augmentations), ``video`` (windows of source clips, control videos, MP4 writing), ``generation``
(requests and candidates for every backend), ``critics`` (metric, Reason and rubric critics),
``selection`` (rejection sampling) and ``inbox`` (candidates dropped by external generators).
The Dagster layer is ``cosmos_assets.synthetic.assets``.
"""
