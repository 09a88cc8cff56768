"""Where results live: results/runs/<run_id>/ (records.jsonl, environment.json, plan.json) and an
SQLite history of every record under results/, so trends and baselines are queries."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from bench.errors import InputError, TwinbenchError
from bench.records import Record

RESULTS = Path(__file__).resolve().parents[1] / "results"


def new_run_id(suite: str) -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{suite}"


class RunDir:
    """One run's folder. Records are appended one line per finished cell and flushed, so an
    interrupted run keeps everything it finished, readable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records_path = path / "records.jsonl"

    @classmethod
    def create(cls, root: Path, run_id: str) -> RunDir:
        path = root / run_id
        if path.exists():
            raise TwinbenchError(f"run folder {path} already exists; resume it with --resume {path}")
        path.mkdir(parents=True)
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> RunDir:
        if not (path / "plan.json").is_file():
            raise TwinbenchError(f"{path} is not a twinbench run (no plan.json)")
        return cls(path)

    def write_json(self, name: str, data: dict) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        tmp.replace(self.path / name)

    def read_json(self, name: str) -> dict:
        return json.loads((self.path / name).read_text())

    def append(self, record: Record) -> None:
        with open(self.records_path, "a") as f:
            f.write(record.to_json() + "\n")
            f.flush()

    def records(self) -> list[Record]:
        """Every complete line; a line cut by an interrupt is ignored, not fatal."""
        if not self.records_path.exists():
            return []
        out = []
        for line in self.records_path.read_text().splitlines():
            try:
                out.append(Record.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, ValueError):
                continue
        return out


def history_path(root: Path = RESULTS) -> Path:
    return root / "history.sqlite"


def append_history(records: list[Record], db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as con:
        con.execute(
            """CREATE TABLE IF NOT EXISTS records (
                run_id TEXT, cell_key TEXT, suite TEXT, twin TEXT, grid TEXT, variant_id TEXT,
                runtime TEXT, device TEXT, batch_size INTEGER, status TEXT,
                energy_j_per_inference REAL, energy_source TEXT, latency_ms_p50 REAL,
                quality_value REAL, record_json TEXT, PRIMARY KEY (run_id, cell_key))"""
        )
        con.executemany(
            "INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    r.run_id, r.cell_key, r.suite, r.twin, r.grid, r.variant_id, r.runtime, r.device,
                    r.batch_size, r.status, r.energy_j_per_inference, r.energy_source, r.latency_ms_p50,
                    r.quality_value, r.to_json(),
                )
                for r in records
            ],
        )  # fmt: skip


def load_records(path: Path) -> tuple[list[Record], dict]:
    """Records and environment from a run folder, a records.jsonl file or a baseline JSON file."""
    path = Path(path)
    if path.is_dir():
        run = RunDir.open(path) if (path / "plan.json").is_file() else None
        if run is None:
            raise InputError(f"{path} is not a twinbench run (no plan.json)")
        env_path = path / "environment.json"
        env = json.loads(env_path.read_text()) if env_path.is_file() else {}
        records = run.records()
    elif path.is_file() and path.suffix == ".json":  # a promoted baseline
        try:
            data = json.loads(path.read_text())
            records, env = [Record.from_dict(r) for r in data["records"]], data.get("environment", {})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise InputError(f"{path} is not a twinbench baseline: {e}") from e
    elif path.is_file():
        records, env = [], {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            try:
                records.append(Record.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, ValueError) as e:
                raise InputError(f"{path}, line {n}: not a twinbench record ({e})") from e
    else:
        raise InputError(f"no run folder or records file at {path}")
    if not records:
        raise InputError(f"{path} holds no records")
    return records, env


BASELINES = RESULTS / "baselines"


def device_slug(env: dict, device: str) -> str:
    """'cuda-nvidia-h100-80gb-hbm3', 'cpu-amd-epyc': baselines are per device model."""
    name = (env.get("gpu_name") if device == "cuda" else env.get("cpu_model")) or "unknown"
    return f"{device}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}"


def baseline_path(env: dict, device: str, root: Path = BASELINES) -> Path:
    return root / f"{device_slug(env, device)}.json"


def promote_baseline(run: Path, root: Path = BASELINES) -> tuple[Path, str | None]:
    """Copy a run's records and environment to results/baselines/<device>.json (committed).
    Returns the path and the run id of the baseline it replaces, if any."""
    records, env = load_records(run)
    if not any(r.status == "ok" for r in records):
        raise InputError(f"{run} has no measured cell: not a baseline")
    devices = {r.device for r in records}
    if len(devices) != 1:
        raise InputError(f"{run} mixes devices {sorted(devices)}")
    path = baseline_path(env, devices.pop(), root)
    replaced = json.loads(path.read_text()).get("run_id") if path.is_file() else None
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


def history(db: Path, twin: str, variant: str | None = None) -> list[Record]:
    """Every record of a twin (optionally one variant, by id or name prefix) over time."""
    if not db.is_file():
        raise InputError(f"no history at {db}: run a suite first")
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT record_json FROM records WHERE twin = ? ORDER BY run_id", (twin,)).fetchall()
        twins = sorted(t for (t,) in con.execute("SELECT DISTINCT twin FROM records"))
    records = [Record.from_dict(json.loads(row[0])) for row in rows]
    if not records:
        raise InputError(f"no history for twin {twin!r}; twins with history: {', '.join(twins) or 'none'}")
    if variant is not None:
        records = [r for r in records if r.variant_id == variant or r.variant_name.startswith(variant)]
        if not records:
            raise InputError(f"no history for variant {variant!r} of {twin}")
    return records
