"""Where results live: results/runs/<run_id>/ (records.jsonl, environment.json, plan.json) and an
SQLite history of every record under results/, so trends and baselines are queries."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from bench.errors import TwinbenchError
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
