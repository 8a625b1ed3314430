"""Configuration knobs: a processing module's settings are a plain dataclass whose fields say what they do.

Each field is declared with ``knob(default, "what it does, and its unit")``. The dataclass is the one
source of the knob's name, default and description: ``resources.config.config_from`` derives the Dagster
``Config`` a run's launchpad shows from it, so the two never drift. No Dagster here.
"""

import dataclasses
from typing import Any, Callable

DESCRIPTION = "description"


def knob(default: Any = dataclasses.MISSING, description: str = "", *,
         default_factory: Callable[[], Any] | Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its description (shown in the launchpad of every asset it configures)."""
    if not description:
        raise ValueError("a knob needs a description")
    return dataclasses.field(default=default, default_factory=default_factory, metadata={DESCRIPTION: description})


def knob_description(field: dataclasses.Field) -> str:
    return field.metadata.get(DESCRIPTION, "")


def knob_default(field: dataclasses.Field) -> Any:
    """The field's default (a factory's value), or ``dataclasses.MISSING`` for a required field."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default
