"""Where results live: results/runs/<run_id>/ (records.jsonl, environment.json, plan.json) and an
SQLite history of every record under results/, so trends and baselines are queries."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import filelock

from bench.records import Record
from models.errors import InputError

RESULTS = Path(__file__).resolve().parents[1] / "results"
RUNS = RESULTS / "runs"


def new_run_id(suite: str) -> str:
    """Time-ordered and unique: two runs started in the same second still get different ids."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{suite}-{secrets.token_hex(3)}"


class RunLocked(InputError):
    """Another twinbench process is writing this run folder."""


class RunDir:
    """One run's folder. Records are appended one whole line per cell and flushed to disk, so an
    interrupted run keeps everything it finished, readable; a folder is written by one process at a
    time (`lock`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records_path = path / "records.jsonl"

    @classmethod
    def create(cls, root: Path, run_id: str) -> RunDir:
        if root.exists() and not root.is_dir():
            raise InputError(f"{root} is a file, not a folder for runs")
        root.mkdir(parents=True, exist_ok=True)
        path = root / run_id
        try:
            path.mkdir()  # exclusive: a folder is never shared by two runs
        except FileExistsError:
            raise InputError(f"run folder {path} already exists; choose another `out`") from None
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> RunDir:
        if not (path / "plan.json").is_file():
            raise InputError(f"{path} is not a twinbench run (no plan.json)")
        return cls(path)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held while a run or resume writes here; a second writer is refused, not interleaved.
        An OS file lock: it dies with its process, so a killed run can be resumed."""
        lock = filelock.FileLock(self.path / ".lock")
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise RunLocked(
                f"run {self.path} is live: another twinbench process is writing to it right now; "
                "wait for it to finish (or stop it) before resuming"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def write_json(self, name: str, data: dict) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        tmp.replace(self.path / name)

    def inside(self, name: str) -> Path:
        """A file of the run folder, refused where it leads out of it (a symlink to elsewhere): a
        report, a selection or a resume reads only what the run wrote."""
        path = self.path / name
        if path.is_symlink() and not path.resolve().is_relative_to(self.path.resolve()):
            raise InputError(f"{path} is a link that leads out of the run folder: refusing to read it")
        return path

    def read_json(self, name: str) -> dict:
        path = self.inside(name)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"{path} is missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # a 100k-deep file too
            raise InputError(f"{path} is not valid JSON: {type(e).__name__}: {e}") from None
        if not isinstance(data, dict):
            raise InputError(f"{path} must hold a JSON object, not {type(data).__name__}")
        return data

    def append(self, records: list[Record]) -> None:
        """One write per record of one whole line, then fsync: a crash can cut at most the line
        being written, which `repair` finds before anything else is appended."""
        lines = [readable_line(r) for r in records]  # all or nothing: checked before the first write
        fd = os.open(self.records_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for line in lines:
                data = line.encode()
                while data:
                    data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def repair(self) -> str | None:
        """Cut a last line that a crash left unfinished (kept in records.jsonl.partial, never
        deleted), so the next record starts on a line of its own. Returns what was done, if anything."""
        if not self.records_path.is_file():
            return None
        data = self.records_path.read_bytes()
        if not data or data.endswith(b"\n"):
            return None
        keep = data.rfind(b"\n") + 1
        with open(self.path / "records.jsonl.partial", "ab") as f:
            f.write(data[keep:] + b"\n")
        with open(self.records_path, "r+b") as f:
            f.truncate(keep)
        return (
            f"records.jsonl ended in an unfinished line ({len(data) - keep} bytes, from an interrupted write): "
            "moved to records.jsonl.partial; its cell is measured again"
        )

    def records(self) -> list[Record]:
        path = self.inside(self.records_path.name)
        return read_records(path) if path.exists() else []


def write_output(
    path: Path, content: str | bytes, starts_with: str | None = None, ours: Callable[[Path], bool] | None = None
) -> Path:
    """Write `content` to `path` whole or not at all (a temporary file beside it, then a rename: a
    full disk leaves the old file, never half a new one). An existing file is replaced only if
    twinbench wrote it: a file of twinbench's own name in its own folder (no check given), one whose
    text begins with `starts_with` (e.g. a verdict's heading), or one `ours` recognises; anything else
    is refused, so an `--out` can never overwrite a run's records."""
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name")
    if path.is_symlink():  # dangling or looping too: exists() is False for those
        raise InputError(f"{path} is a symbolic link, which twinbench did not write: refusing to replace it")
    if starts_with is not None:
        ours = partial(_starts_with, starts_with)
    if ours is not None and path.exists() and not ours(path):
        raise InputError(f"{path} exists and twinbench did not write it: refusing to replace it; choose another file")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(content) if isinstance(content, bytes) else tmp.write_text(content)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def _starts_with(heading: str, path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(len(heading)) == heading
    except (OSError, UnicodeDecodeError):
        return False


def readable_line(record: Record) -> str:
    """The record's line of records.jsonl, read back through the same checks every reader applies:
    a record that could not be read back (a float batch size, a value JSON cannot hold) is never
    written, where it would poison the run folder for every later command."""
    try:
        line = record.to_json()
        Record.from_dict(json.loads(line))
    except (TypeError, ValueError) as e:
        raise InputError(f"refusing to write the record of {record.cell_key}: it could not be read back ({e})") from e
    return line + "\n"


def read_records(path: Path) -> list[Record]:
    """Every record of a records.jsonl file, strictly: a line that is not a valid record, and a last
    line cut by an interrupted write, are errors that name the line (every command reads this way)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines[-1].strip():
        raise InputError(
            f"{path}, line {len(lines)}: unfinished (a write was cut off); "
            "`twinbench run --resume RUN` repairs a run folder"
        )
    records = []
    for n, line in enumerate(lines[:-1], 1):
        if not line.strip():
            continue
        try:
            records.append(Record.from_dict(json.loads(line)))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, RecursionError) as e:
            raise InputError(f"{path}, line {n}: not a twinbench record ({type(e).__name__}: {e})") from None
    return records


def run_folders(runs: Path) -> list[Path]:
    """The run folders in a runs folder, oldest first (run ids start with their UTC start time)."""
    return sorted(p for p in runs.iterdir() if (p / "plan.json").is_file())


def load_records(path: Path) -> tuple[list[Record], dict]:
    """Records and environment from a run folder, a records.jsonl file or a baseline JSON file."""
    path = Path(path)
    if path.is_dir():
        run = RunDir.open(path)
        env = run.read_json("environment.json") if (path / "environment.json").is_file() else {}
        records = run.records()
    elif path.is_file() and path.suffix == ".json":  # a promoted baseline
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("environment", {}), dict):
                raise ValueError("not a JSON object with records and environment")
            records, env = [Record.from_dict(r) for r in data["records"]], data.get("environment", {})
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, RecursionError) as e:
            raise InputError(f"{path} is not a twinbench baseline: {type(e).__name__}: {e}") from None
    elif path.is_file():
        records, env = read_records(path), {}
    else:
        raise InputError(f"no run folder or records file at {path}")
    if not records:
        raise InputError(f"{path} holds no records")
    return records, env


def run_folder_of(path: Path) -> Path | None:
    """The run folder that records at `path` (a run folder or its records.jsonl) were measured in."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return folder if (folder / "plan.json").is_file() else None


BASELINES = RESULTS / "baselines"


def device_slug(env: dict, device: str) -> str:
    """'cuda-nvidia-h100-80gb-hbm3', 'cpu-amd-epyc': baselines are per device model."""
    name = (env.get("gpu_name") if device == "cuda" else env.get("cpu_model")) or "unknown"
    return f"{device}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}"


def baseline_path(env: dict, device: str, root: Path = BASELINES) -> Path:
    return root / f"{device_slug(env, device)}.json"


def promote_baseline(run: Path, root: Path = BASELINES, force: bool = False) -> tuple[Path, str | None]:
    """Copy a run's records and environment to results/baselines/<device>.json (committed).
    Returns the path and the run id of the baseline it replaces, if any. A run that covers fewer
    cells than the baseline it would replace needs `force`: a nightly gate compares only the
    cells its baseline holds, so a smaller baseline silently checks less."""
    records, env = load_records(run)
    if not any(r.status == "ok" for r in records):
        raise InputError(f"{run} has no measured cell: not a baseline")
    devices = {r.device for r in records}
    if len(devices) != 1:
        raise InputError(f"{run} mixes devices {sorted(devices)}")
    path = baseline_path(env, devices.pop(), root)
    replaced = None
    if path.is_file():
        old, _ = load_records(path)
        replaced = old[0].run_id
        measured = {r.cell_key for r in records if r.status == "ok"}
        lost = sorted({r.cell_key for r in old if r.status == "ok"} - measured)
        if lost and not force:
            twins = sorted({r.twin for r in old} - {r.twin for r in records})
            raise InputError(
                f"{run} does not measure {len(lost)} of the {len(old)} cells of the baseline it would replace "
                f"({path}, run {replaced})"
                + (f", twins {', '.join(twins)} entirely" if twins else f", e.g. {lost[0]}")
                + "; pass --force to replace it anyway"
            )
    data = {
        "run_id": records[0].run_id,
        "suite": records[0].suite,
        "environment": env,
        "records": [json.loads(r.to_json()) for r in records],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path, replaced
