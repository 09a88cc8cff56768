"""Twins register themselves by name with `@register_twin`, beside their definition.

Every module in the `models` package (but for this one and the `grid` data package) is a twin
module; `twins()` imports them on first use, so adding a twin touches one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from bench.errors import UnknownNameError

_TWINS: dict[str, TwinSpec] = {}
_NOT_TWIN_MODULES = {"registry"}


@dataclass(frozen=True)
class TwinSpec:
    """What a twin is: its task, data and how its quality is judged."""

    name: str
    summary: str
    data: str  # which cached arrays it learns from
    metric: str  # primary quality metric, lower is better
    baseline: str  # the naive forecast it must beat


def register_twin(spec: TwinSpec) -> TwinSpec:
    if spec.name in _TWINS:
        raise ValueError(f"twin {spec.name!r} registered twice")
    _TWINS[spec.name] = spec
    return spec


def twins() -> dict[str, TwinSpec]:
    if not _TWINS:
        import models

        for module in pkgutil.iter_modules(models.__path__):
            if not module.ispkg and module.name not in _NOT_TWIN_MODULES:
                importlib.import_module(f"models.{module.name}")
    return dict(_TWINS)


def twin_names() -> list[str]:
    return sorted(twins())


def get_twin(name: str) -> TwinSpec:
    if name not in twins():
        raise UnknownNameError("twin", name, twin_names())
    return twins()[name]
