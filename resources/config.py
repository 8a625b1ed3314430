"""Dagster run config derived from the processing modules' dataclasses (one source per knob).

A processing module declares its settings as a plain dataclass of ``knob`` fields
(``cosmos_assets.common.knobs``). ``config_from`` turns it into a ``dg.Config`` with the same field names,
types, defaults and descriptions, so the launchpad shows what each knob does, and ``to_dataclass`` turns
a run's config back into the dataclass. An asset's own knobs (not the processing module's) are declared
on a subclass with ``pydantic.Field(default, description=...)``.
"""

# No `from __future__ import annotations` here: Dagster reads the field annotations at class creation.

import dataclasses
import typing
from typing import Any, Iterable, Optional

import dagster as dg
from pydantic import Field

from cosmos_assets.common.knobs import knob_default, knob_description

REQUIRED = object()  # in `defaults`: the run config must give this field


def _config_type(annotation):
    """Tuples become lists in run config (YAML has no tuples); ``to_dataclass`` turns them back."""
    if typing.get_origin(annotation) is tuple:
        return list[typing.get_args(annotation)[0]]
    return annotation


def field_from(source: type, name: str, **overrides: Any):
    """A pydantic ``Field`` with the default and description of the knob ``source.name``: for a resource
    field that holds a processing module's setting (``overrides``: e.g. a per-profile ``default``)."""
    field = {f.name: f for f in dataclasses.fields(source)}[name]
    if not knob_description(field):
        raise TypeError(f"{source.__name__}.{name} has no description: declare it with knob()")
    return Field(**({"default": knob_default(field), "description": knob_description(field)} | overrides))


class DerivedConfig(dg.Config):
    """A ``dg.Config`` whose fields come from dataclasses (``config_from``)."""

    @classmethod
    def from_dataclass(cls, value: Any) -> "DerivedConfig":
        """This config with the values of a source dataclass (e.g. a module's preset settings)."""
        own = {name: getattr(value, name) for name in cls.model_fields if hasattr(value, name)}
        return cls(**{name: list(v) if isinstance(v, tuple) else v for name, v in own.items()})

    def to_dataclass(self, cls: Optional[type] = None, **values: Any):
        """The dataclass ``cls`` (the first source when not given) with this run's values; fields the
        config does not carry keep the dataclass's defaults, and ``values`` win over both."""
        cls = cls or type(self).__knob_sources__[0]
        names = {f.name: f for f in dataclasses.fields(cls)}
        own = {name: getattr(self, name) for name in names if name in type(self).model_fields}
        for name, value in own.items():
            if isinstance(value, list) and typing.get_origin(names[name].type) is tuple:
                own[name] = tuple(value)
        return cls(**(own | values))


def config_from(*sources: type, include: Optional[Iterable[str]] = None, exclude: Iterable[str] = (),
                defaults: Optional[dict[str, Any]] = None, unset: Optional[dict[str, str]] = None,
                name: Optional[str] = None) -> type[DerivedConfig]:
    """A ``dg.Config`` class with a field per knob of the dataclasses ``sources`` (in order; a name in two
    sources is taken from the first).

    include / exclude: which knobs the run config offers (the others keep the dataclass default).
    defaults: a different default for this use (``REQUIRED``: no default).
    unset: knobs that may be left unset (None), each with what then applies, appended to the description.
    """
    include = set(include) if include is not None else None
    defaults, unset, exclude = defaults or {}, unset or {}, set(exclude)
    annotations, namespace = {}, {}
    for source in sources:
        hints = typing.get_type_hints(source)
        for field in dataclasses.fields(source):
            if field.name in annotations or field.name in exclude or (include is not None and field.name not in include):
                continue
            description = knob_description(field)
            if not description:
                raise TypeError(f"{source.__name__}.{field.name} has no description: declare it with knob()")
            annotation = _config_type(hints[field.name])
            default = defaults.get(field.name, knob_default(field))
            if isinstance(default, tuple):
                default = list(default)
            if field.name in unset:
                annotation, default = Optional[annotation], None
                description = f"{description} Unset: {unset[field.name]}"
            annotations[field.name] = annotation
            namespace[field.name] = (Field(description=description) if default is REQUIRED or default is dataclasses.MISSING
                                     else Field(default=default, description=description))
    unknown = (set(defaults) | set(unset) | (include or set())) - set(annotations)
    if unknown:
        raise TypeError(f"config_from: {sorted(unknown)} are no knobs of {[s.__name__ for s in sources]}")
    namespace["__annotations__"] = annotations
    namespace["__knob_sources__"] = sources
    return type(name or f"{sources[0].__name__}RunConfig", (DerivedConfig,), namespace)
