"""One registry kind for every extension point (twins, passes, runtimes, energy meters), and one
declarative answer to "can it run here, and if not, why".

A registry fills itself lazily, the first time anyone asks for a name: it imports its built-in
modules (whose decorators register their entries) and then loads the entry points that installed
packages declare in its group (`twinbench.twins`, `twinbench.passes`, `twinbench.runtimes`,
`twinbench.meters`). An entry point names either a module whose import registers entries through the
decorator, or one object, registered under the entry point's name. Every entry remembers where it
came from: "built-in" or the distribution holding its module, "<package> <version>". A plugin that fails to load is listed with its error
instead of breaking every command.

A leaf module: it imports nothing else of the project but the errors, so every layer may use it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pkgutil
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Generic, TypeVar

from models.errors import UnknownNameError

T = TypeVar("T")
BUILT_IN = "built-in"


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    origin: str  # "built-in" or "<distribution> <version>"


class Registry(Generic[T]):
    """Named entries of one extension point. `register` is the decorator beside each definition."""

    def __init__(
        self, kind: str, group: str, builtin: tuple[str, ...] = (), skip: frozenset[str] = frozenset(),
        expects: type | None = None,
    ):  # fmt: skip
        self.kind = kind  # "twin", "pass", ...: the word error messages use
        self.group = group  # entry-point group of other packages
        # What an entry point must name: a subclass of `expects` (a class) or an instance of it.
        self._expects = expects
        self._builtin = builtin  # packages or modules holding the built-in entries
        self._skip = skip  # modules of those packages that define no entry (base classes)
        self._entries: dict[str, Entry[T]] = {}
        self._failed: dict[str, str] = {}  # entry point name -> why it did not load
        self._discovered = False

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: register `obj` under `name`, by default its `name` attribute."""

        def wrap(obj: T) -> T:
            self.add(name or obj.name, obj)
            return obj

        return wrap

    def add(self, name: str, obj: T, code: object = None) -> None:
        """Register `obj`; its origin is found from `code` (default: `obj` itself), the function or
        class whose module says which package it comes from (a wrapper's own module would not)."""
        origin = origin_of(obj if code is None else code)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice ({self._entries[name].origin} and {origin})")
        self._entries[name] = Entry(name, obj, origin)

    def entries(self) -> dict[str, Entry[T]]:
        self._discover()
        return dict(sorted(self._entries.items()))

    def names(self) -> list[str]:
        return list(self.entries())

    def get(self, name: str) -> T:
        entries = self.entries()
        if name in entries:
            return entries[name].obj
        if name in self._failed:
            raise UnknownNameError(
                self.kind, f"{name} (its plugin failed to load: {self._failed[name]})", list(entries)
            )
        raise UnknownNameError(self.kind, name, list(entries))

    def failures(self) -> dict[str, str]:
        """Entry points of other packages that could not be loaded, with the reason."""
        self._discover()
        return dict(self._failed)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # first: a built-in module that asks for names must not recurse
        for name in self._builtin:
            for module in _modules(name, self._skip):
                importlib.import_module(module)
        for ep in metadata.entry_points(group=self.group):
            try:
                loaded = ep.load()
                if not isinstance(loaded, types.ModuleType) and all(
                    e.obj is not loaded for e in self._entries.values()
                ):
                    if why := self._not_expected(loaded):
                        raise TypeError(why)
                    self.add(ep.name, loaded)  # an object the entry point names, not a module
            # A broken plugin must not break every command: SystemExit too (a plugin that calls
            # sys.exit on import ended `list` and `run` silently); Ctrl-C still stops everything.
            except (Exception, SystemExit) as e:
                self._failed[ep.name] = f"{type(e).__name__}: {e}"

    def _not_expected(self, obj) -> str | None:
        """Why `obj` is not a {kind} (None when it is): e.g. an entry point naming a function as a pass."""
        want = self._expects
        if want is None or (isinstance(obj, type) and issubclass(obj, want)) or isinstance(obj, want):
            return None
        return f"the entry point names {obj!r}, which is not a {self.kind} ({want.__module__}.{want.__qualname__})"


PROJECT_PACKAGES = ("models", "compress", "bench")


def origin_of(obj) -> str:
    """Where an entry's code comes from: "built-in", or the installed distribution that holds its
    module, "<name> <version>" (found from the module, so it does not matter which entry point or
    import brought it in)."""
    top = getattr(obj, "__module__", "").partition(".")[0]
    if top in PROJECT_PACKAGES:
        return BUILT_IN
    dists = _distributions().get(top)
    if not dists:
        return f"{top or '?'} (not installed)"
    return f"{dists[0]} {metadata.version(dists[0])}"


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def _modules(name: str, skip: frozenset[str]) -> Iterator[str]:
    """`name` itself, or every module of the package `name` except `skip`."""
    module = importlib.import_module(name)
    if not hasattr(module, "__path__"):
        yield name
        return
    for info in pkgutil.iter_modules(module.__path__):
        if info.name not in skip:
            yield f"{name}.{info.name}"


@dataclass(frozen=True)
class Requirements:
    """What a pass, runtime or meter needs to run: checked in one place, shown by `twinbench list`."""

    device: str | None = None  # "cuda": needs a CUDA device
    compute_capability: tuple[int, int] | None = None  # the CUDA device's minimum
    targets: tuple[str, ...] | None = None  # where its result can run ("torch", "onnx"); None: all
    libraries: tuple[str, ...] = ()  # importable modules it needs
    target_libraries: tuple[tuple[str, str], ...] = ()  # (target, module): needed on that target only
    why: str = ""  # what the hardware requirement is for, e.g. "fp8 tensor cores"

    def unmet(self, device: str, target: str | None = None) -> str | None:
        """Why it cannot run on `device` (cpu | cuda) for `target`; None when it can."""
        for_what = f" ({self.why})" if self.why else ""
        if self.device == "cuda" and device != "cuda":
            return f"needs a CUDA GPU{for_what}; the device is {device}"
        if self.device == "cuda" or (self.compute_capability and device == "cuda"):
            import torch

            if not torch.cuda.is_available():
                return f"needs a CUDA GPU{for_what}, none is available here"
            if self.compute_capability and torch.cuda.get_device_capability() < self.compute_capability:
                have, need = _version(torch.cuda.get_device_capability()), _version(self.compute_capability)
                return f"needs compute capability >= {need}{for_what}, this GPU has {have}"
        if target is not None and self.targets is not None and target not in self.targets:
            return f"runs on {' and '.join(self.targets)} runtimes only, not {target}"
        needed = [*self.libraries, *(lib for t, lib in self.target_libraries if target in (None, t))]
        if missing := [lib for lib in needed if importlib.util.find_spec(lib) is None]:
            return f"needs {', '.join(missing)}, not installed here"
        return None

    def describe(self) -> str:
        """The requirements in words, for `twinbench list` ("" when there are none)."""
        parts = []
        if self.device:
            parts.append(self.device)
        if self.compute_capability:
            parts.append(f"compute capability >= {_version(self.compute_capability)}")
        if self.targets:
            parts.append(f"{'/'.join(self.targets)} only")
        parts += [*self.libraries, *(f"{lib} (on {t})" for t, lib in self.target_libraries)]
        return ", ".join(parts)


def _version(capability: tuple[int, int]) -> str:
    return ".".join(map(str, capability))
