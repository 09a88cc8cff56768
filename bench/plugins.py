"""Registries fill themselves by importing every module of a package (twins, passes)."""

from __future__ import annotations

import importlib
import pkgutil


def import_all(package: str, skip: frozenset[str] = frozenset()) -> None:
    """Import each module of `package` except `skip`; importing one directly hides none of the others."""
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        if info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
