"""Errors the CLI turns into a clear message and a non-zero exit code (never a traceback)."""

from __future__ import annotations


class TwinbenchError(Exception):
    """Base class: a problem with the user's input or environment (a name, a value, a file, a cache
    they can fix), reported as `error: <message>`. One exit-code rule for every command: 0 ok,
    1 a verdict that says no (`Verdict`), 2 bad input, 130 interrupted."""

    exit_code = 2


class Verdict(TwinbenchError):
    """A real answer that is "no": no variant meets the constraints, a plan does not fit the time
    given. Exit 1, like a regression or a baseline not beaten."""

    exit_code = 1


class UnknownNameError(TwinbenchError):
    """A suite, twin, grid or other registered name that does not exist."""

    exit_code = 2

    def __init__(self, kind: str, name: str, valid: list[str] | tuple[str, ...], plural: str | None = None):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        plural = plural or kind + ("es" if kind.endswith("s") else "s")  # given where that rule fails
        super().__init__(f"unknown {kind} {name!r}; valid {plural}: {', '.join(self.valid)}")


class ConfigError(TwinbenchError):
    """A configuration file or value that is malformed."""

    exit_code = 2


class InputError(TwinbenchError):
    """A run, records file or baseline that is missing, unreadable or not comparable."""

    exit_code = 2


class DataError(TwinbenchError):
    """Data that cannot be built or used: a failed power flow, an inconsistent grid."""


class CacheError(DataError):
    """A cache that is missing, corrupt or stale and must not be used as it is."""


class Unsupported(Exception):
    """A pass or runtime that cannot run here (missing library, needs CUDA, unsupported op).

    Not an error: the runner turns it into a record with status="unsupported" and this reason.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
