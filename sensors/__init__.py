"""Sensors that start the next step of the flywheel when new data lands."""

from sensors.landing_zone import LandingZoneSettings, landing_zone_sensor

__all__ = ["LandingZoneSettings", "landing_zone_sensor"]
