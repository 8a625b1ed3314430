"""Sensors that start the next step of the flywheel when new data lands."""

from sensors.curated_dataset import curated_dataset_sensor
from sensors.generation_round import generation_round_sensor
from sensors.landing_zone import landing_zone_sensor
from sensors.synthetic_batch import synthetic_batch_sensor

__all__ = ["curated_dataset_sensor", "generation_round_sensor", "landing_zone_sensor", "synthetic_batch_sensor"]
