"""The SQLite history of every record of every run in a runs folder (runs/history.sqlite): what
`twinbench history` reads and `nightly` trends come from. It is derived data: records.jsonl files
are the truth, and the history is rebuilt from them on demand."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.records import Record
from bench.store import RUNS, RunDir, run_folders
from models.errors import InputError

HISTORY_NAME = "history.sqlite"


def history_path(runs: Path = RUNS) -> Path:
    """The one rule: a runs folder indexes its runs in its own history.sqlite (a cache of their
    records.jsonl files, rebuilt from them on demand)."""
    return runs / HISTORY_NAME


_SCHEMA = """CREATE TABLE IF NOT EXISTS records (
    run_id TEXT, cell_key TEXT, suite TEXT, twin TEXT, grid TEXT, variant_id TEXT,
    runtime TEXT, device TEXT, batch_size INTEGER, status TEXT,
    energy_j_per_inference REAL, energy_source TEXT, latency_ms_p50 REAL,
    quality_value REAL, record_json TEXT, PRIMARY KEY (run_id, cell_key))"""


def append_history(records: list[Record], db: Path) -> None:
    """Add records to the history (idempotent). Raises sqlite3.DatabaseError on a corrupt file."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as con:
        con.execute(_SCHEMA)
        con.executemany(
            "INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    r.run_id,
                    r.cell_key,
                    r.suite,
                    r.twin,
                    r.grid,
                    r.variant_id,
                    r.runtime,
                    r.device,
                    r.batch_size,
                    r.status,
                    r.energy_j_per_inference,
                    r.energy_source,
                    r.latency_ms_p50,
                    r.quality_value,
                    r.to_json(),
                )
                for r in records
            ],
        )
    con.close()


def try_append_history(records: list[Record], db: Path, log: Callable[[str], None]) -> bool:
    """The history is a cache: a broken one is reported, never allowed to stop a run."""
    try:
        append_history(records, db)
        return True
    except (sqlite3.Error, OSError) as e:
        log(
            f"warning: history {db} not updated ({e}); the records are safe in records.jsonl: "
            f"rebuild it with `twinbench history --rebuild --runs {db.parent}`"
        )
        return False


def rebuild_history(runs: Path, log: Callable[[str], None] = print) -> tuple[Path, int, int]:
    """Rebuild <runs>/history.sqlite from every run folder's records.jsonl. An existing file is
    moved aside (never deleted). Returns (db, runs indexed, records indexed)."""
    if not runs.is_dir():
        raise InputError(f"no runs folder at {runs}")
    db = history_path(runs)
    if db.exists():
        aside = db.with_name(f"{db.name}.old-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}")
        db.replace(aside)
        log(f"previous history moved to {aside}")
    n_runs = n_records = 0
    for folder in run_folders(runs):
        try:
            records = RunDir(folder).records()
        except (InputError, OSError) as e:
            log(f"skipped {folder.name}: {e}")
            continue
        append_history(records, db)
        n_runs, n_records = n_runs + 1, n_records + len(records)
    if not db.exists():
        append_history([], db)
    return db, n_runs, n_records


def history(db: Path, twin: str, variant: str | None = None) -> list[Record]:
    """Every record of a twin (optionally one variant, by id or name prefix) over time."""
    if not db.is_file():
        raise InputError(f"no history at {db}: run a suite first (or `twinbench history --rebuild --runs DIR`)")
    try:
        with sqlite3.connect(db) as con:
            rows = con.execute("SELECT record_json FROM records WHERE twin = ? ORDER BY run_id", (twin,)).fetchall()
            twins = sorted(t for (t,) in con.execute("SELECT DISTINCT twin FROM records"))
        con.close()
        records = [Record.from_dict(json.loads(row[0])) for row in rows]
    except (sqlite3.Error, json.JSONDecodeError, TypeError, ValueError) as e:
        raise InputError(
            f"history {db} is unreadable ({e}); it is a cache of the runs' records: rebuild it with "
            f"`twinbench history --rebuild --runs {db.parent}`"
        ) from e
    if not records:
        raise InputError(f"no history for twin {twin!r}; twins with history: {', '.join(twins) or 'none'}")
    if variant is not None:
        records = [r for r in records if r.variant_id == variant or r.variant_name.startswith(variant)]
        if not records:
            raise InputError(f"no history for variant {variant!r} of {twin}")
    return records
