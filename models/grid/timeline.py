"""The time axis of a profiles file: times read, checked (duplicates, 15-minute steps, gaps) and,
where the user chose a policy, repaired (finer readings averaged to 15 minutes, short gaps filled).

The rules (README, "Bring your own grid"; docs/grids.md):
- Times with a UTC offset are instants, read as UTC. Times without one are wall-clock times: they
  jump at daylight-saving changes (01:45 -> 03:00 in spring, 01:45 or 02:45 -> back an hour in
  autumn), as SimBench's own do, and those jumps are still consecutive 15-minute steps.
- A time that appears twice is refused (the autumn wall-clock repeat, 4 rows later, is not one).
- Steps other than 15 minutes are refused, unless the user asked to resample finer readings
  (`resample`: the mean of the readings stamped in [t, t + 15 min), as pandas'
  `resample('15min').mean()`).
- Missing values and missing rows are refused, unless the user allowed gaps up to a length
  (`fill_gaps`): those are filled linearly in time between the readings either side (pandas'
  `interpolate(method='time', limit_area='inside')`, but only for whole gaps no longer than the
  limit, where pandas' `limit` would fill the start of a longer one). Longer gaps, and gaps at the
  start or end (nothing to interpolate from), are refused and listed.

What was done is returned as a `treatment` dict, which the grid's manifest keeps.
"""

from __future__ import annotations

import numpy as np

from models.errors import DataError
from models.grid.cache import STEP_MINUTES
from models.grid.source import AS_GIVEN, ProfilePolicy

MINUTE_NS = 60 * 10**9
STEP_NS = STEP_MINUTES * MINUTE_NS
SHOWN = 3  # gaps and duplicates listed in a refusal


def parse_times(raw, what: str):
    """A DatetimeIndex from a column of ISO 8601 or SimBench (`01.01.2016 00:15`) times."""
    import pandas as pd

    # Times with offsets that change at daylight saving (+01:00, then +02:00) are one instant each:
    # read as UTC, where the steps stay 15 minutes apart. Times without a zone stay wall-clock times.
    text = pd.Series(raw).astype(str)
    utc = bool(text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True).any())
    for fmt in ("ISO8601", "%d.%m.%Y %H:%M"):
        try:
            stamps = pd.DatetimeIndex(pd.to_datetime(text, format=fmt, utc=utc))
        except (ValueError, TypeError):
            continue
        if not stamps.isna().any():
            return stamps
    raise DataError(
        f"{what}: cannot read its time column as dates (ISO 8601 such as 2016-01-01 00:15, or SimBench's "
        "01.01.2016 00:15; with or without a UTC offset such as +01:00)"
    )


def check_duplicates(stamps, what: str) -> None:
    """Refuse times that appear twice, naming the first few. Wall-clock times (no zone) repeat an hour
    at the autumn daylight-saving change, as SimBench's own do: a time seen again exactly 4 rows
    later is that repeat, not a duplicate. Times with a zone are instants, and never repeat."""
    values = stamps.asi8
    order = np.argsort(values, kind="stable")
    same = np.flatnonzero(values[order][1:] == values[order][:-1])
    pairs = [(int(order[i]), int(order[i + 1])) for i in same]
    if stamps.tz is None:
        pairs = [(a, b) for a, b in pairs if b - a != 4]
    if pairs:
        shown = "; ".join(f"rows {a + 2} and {b + 2} ({stamps[a]})" for a, b in pairs[:SHOWN])
        more = f" and {len(pairs) - SHOWN} more" if len(pairs) > SHOWN else ""
        raise DataError(f"{what}: times that appear twice: {shown}{more}; keep one row per time")


def _dst_jumps(stamps) -> np.ndarray:
    """Where a wall-clock series (no zone) jumps at a daylight-saving change: +75 min from 01:45
    (spring, EU and US), -45 min from 01:45 (US autumn) or 02:45 (EU autumn). Anywhere else, 75
    minutes is four missing rows, not a clock change."""
    deltas = np.diff(stamps.asi8)
    if stamps.tz is not None or not len(deltas):
        return np.zeros(len(deltas), dtype=bool)
    clock = stamps[:-1].hour * 60 + stamps[:-1].minute
    spring = (deltas == 75 * MINUTE_NS) & (clock == 105)
    autumn = (deltas == -45 * MINUTE_NS) & np.isin(clock, [105, 165])
    return np.asarray(spring | autumn)


def check_steps(stamps, what: str, unit: str, first_row: int = 0, policy: ProfilePolicy = AS_GIVEN) -> None:
    """Every step 15 minutes after the one before (or a wall-clock daylight-saving jump): the twins'
    windows (96 steps = a day) and calendar inputs assume it. How to resample or fill is the user's
    call (`resample`, `fill_gaps`, or pandas), never a silent default."""
    deltas = np.diff(stamps.asi8)
    bad = np.flatnonzero((deltas != STEP_NS) & ~_dst_jumps(stamps))
    if not bad.size:
        return
    k = int(bad[0])
    where = f"{unit} {k + 1 + first_row} ({stamps[k + 1]})"
    if deltas[k] <= 0:
        raise DataError(f"{what}: times must increase, but {where} is not after the {unit} before it")
    typical = int(np.median(deltas))
    if typical > STEP_NS:  # coarser data (hourly meters): values between readings would be invented
        how = f"the data is every {duration(typical)}, {HOURLY}"
    elif typical < STEP_NS:
        how = f"the data is every {duration(typical)}: build with `resample` to average it to {STEP_MINUTES} minutes"
    elif policy.fill_steps:
        how = f"{deltas[k] // STEP_NS - 1} missing step(s), more than the {policy.fill_gaps_minutes} min `fill_gaps` fills"
    else:
        how = f"{deltas[k] // STEP_NS - 1} missing step(s): `fill_gaps` fills short gaps by interpolation in time"
    raise DataError(
        f"{what}: twinbench's twins need one step every {STEP_MINUTES} minutes, but {where} comes "
        f"{duration(int(deltas[k]))} after the {unit} before it ({how})"
    )


HOURLY = (
    "and values between readings would be invented: if that is what you want, in pandas "
    "frame.set_index('time').resample('15min').interpolate(method='time')"
)


def duration(ns: int) -> str:
    """A time span as people write it: 5 min, 1 h, 1 h 45 min, 2 days 3 h."""
    minutes = ns / MINUTE_NS
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days:g} day{'s' if days != 1 else ''}" if days else "", f"{hours:g} h" if hours else ""]
    parts.append(f"{minutes:g} min" if minutes or not (days or hours) else "")
    return " ".join(p for p in parts if p)


def treat(stamps, columns: dict[str, np.ndarray], policy: ProfilePolicy, what: str, log):
    """Resample and fill as `policy` asks; the caller checks the steps and gaps that are left.
    Returns (stamps, columns, treatment); `columns` maps a column name to its float values (NaN where
    missing)."""
    treatment: dict = {}
    if policy.resample:
        stamps, columns, treatment["resampled"] = resample_mean(stamps, columns, what, log)
    if policy.fill_gaps_minutes:
        stamps, columns, inserted = insert_missing_rows(stamps, columns, policy.fill_steps)
        treatment["filled"] = fill_gaps(columns, policy.fill_steps) | {"rows_inserted": inserted}
        filled = treatment["filled"]
        if filled["values"]:
            log(
                f"{what}: filled {filled['values']} value(s) in {filled['gaps']} gap(s) (longest "
                f"{filled['longest_gap_minutes']} min, {inserted} missing row(s) inserted) by interpolation in time"
            )
        else:
            log(f"{what}: no gap of at most {policy.fill_gaps_minutes} min to fill")
    return stamps, columns, treatment


def resample_mean(stamps, columns: dict[str, np.ndarray], what: str, log):
    """Readings finer than 15 minutes (5-minute, 1-minute) averaged into 15-minute steps: the mean of
    the finite readings stamped in [t, t + 15 min), the convention of pandas' resample('15min').mean().
    Power is averaged, never summed. A step with no reading at all stays missing (a gap)."""
    import pandas as pd

    deltas = np.diff(stamps.asi8)
    typical = int(np.median(deltas)) if len(deltas) else STEP_NS
    if typical > STEP_NS or STEP_NS % max(typical, 1):
        coarse = f", {HOURLY}" if typical > STEP_NS else ""
        raise DataError(
            f"{what}: `resample` averages readings finer than {STEP_MINUTES} minutes that divide it (1, 3, 5 "
            f"minutes); this data is every {duration(typical)}{coarse}"
        )
    if typical == STEP_NS:
        log(f"{what}: already one row every {STEP_MINUTES} minutes; nothing resampled")
        return stamps, columns, {"from_minutes": STEP_MINUTES, "rows_in": len(stamps), "steps_out": len(stamps)}
    if (deltas <= 0).any():
        k = int(np.flatnonzero(deltas <= 0)[0])
        raise DataError(
            f"{what}: times go back at {stamps[k + 1]} (a daylight-saving repeat of wall-clock times?); resampling "
            "needs instants: give the times with their UTC offset (2016-10-30 02:05+02:00, then +01:00)"
        )
    bins = stamps.floor(f"{STEP_MINUTES}min")
    frame = pd.DataFrame(columns, index=bins)
    means = frame.groupby(level=0, sort=True).mean()  # NaN readings are skipped, as pandas' mean does
    expected = STEP_NS // typical
    counts = frame.notna().all(axis=1).groupby(level=0, sort=True).sum()
    info = {
        "from_minutes": round(typical / MINUTE_NS, 3),
        "rows_in": len(stamps),
        "steps_out": len(means),
        "how": f"mean of the readings stamped in [t, t + {STEP_MINUTES} min)",
        "steps_with_missing_readings": int((counts < expected).sum()),
    }
    log(
        f"{what}: resampled {len(stamps)} rows every {duration(typical)} to {len(means)} steps of "
        f"{STEP_MINUTES} min (mean); {info['steps_with_missing_readings']} step(s) had fewer than {expected} readings"
    )
    out = {name: means[name].to_numpy(np.float64) for name in columns}
    return pd.DatetimeIndex(means.index), out, info


def insert_missing_rows(stamps, columns: dict[str, np.ndarray], max_steps: int):
    """Rows missing from the series (a jump of k whole steps, k - 1 <= max_steps) inserted as NaN,
    so that `fill_gaps` fills them as it fills missing values. Longer jumps stay, for check_steps
    to refuse. Returns (stamps, columns, rows inserted)."""
    import pandas as pd

    deltas = np.diff(stamps.asi8)
    missing = np.where((deltas % STEP_NS == 0) & (deltas > STEP_NS) & ~_dst_jumps(stamps), deltas // STEP_NS - 1, 0)
    missing[missing > max_steps] = 0
    if not missing.any():
        return stamps, columns, 0
    where = np.repeat(np.arange(1, len(stamps)), missing)  # np.insert positions, before row i + 1
    offsets = np.concatenate([np.arange(1, m + 1) for m in missing if m])
    new_times = stamps.asi8[where - 1] + offsets * STEP_NS
    times = np.insert(stamps.asi8, where, new_times)
    out = {name: np.insert(values, where, np.nan) for name, values in columns.items()}
    return pd.DatetimeIndex(times.view("datetime64[ns]")).tz_localize(stamps.tz), out, int(missing.sum())


def nan_runs(values: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of non-finite values."""
    edges = np.diff(np.concatenate([[0], (~np.isfinite(values)).astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b - a)) for a, b in zip(starts, ends, strict=True)]


def fill_gaps(columns: dict[str, np.ndarray], max_steps: int) -> dict:
    """Fill, in place, each run of missing values no longer than `max_steps` that has a reading on
    both sides, linearly between those readings (the steps are equally spaced in time, so linear
    in position is linear in time). Returns what was filled: values, gaps in time, the longest."""
    values, spans = 0, set()
    for series in columns.values():
        for start, length in nan_runs(series):
            if length > max_steps or start == 0 or start + length == len(series):
                continue
            before, after = series[start - 1], series[start + length]
            series[start : start + length] = before + (after - before) * np.arange(1, length + 1) / (length + 1)
            values += length
            spans.add((start, length))
    return {
        "values": values,  # in all columns
        "gaps": len(spans),  # in time: a missing row is one gap, however many columns it empties
        "longest_gap_minutes": max((length for _, length in spans), default=0) * STEP_MINUTES,
        "limit_minutes": max_steps * STEP_MINUTES,
        "how": "linear in time between the readings either side",
    }


def check_gaps(columns: dict[str, np.ndarray], stamps, what: str, raw=None, policy=AS_GIVEN) -> None:
    """Refuse missing or non-numeric values, listing the first few gaps (column, start, length).
    `raw` (the columns as read, when rows are still the file's rows) lets the message name the first
    bad value and its row; after resampling or filling, gaps are named by time."""
    gaps = sorted((start, name, length) for name, series in columns.items() for start, length in nan_runs(series))
    if not gaps:
        return
    more = f" and {len(gaps) - SHOWN} more" if len(gaps) > SHOWN else ""
    if raw is not None:
        row, name, _ = gaps[0]
        shown = "; ".join(f"{n} from row {a + 2} ({stamps[a]}), {k} step(s)" for a, n, k in gaps[:SHOWN])
        raise DataError(
            f"{what}: column {name} holds a value that is not a finite number ({raw[name].iloc[row]!r} at row "
            f"{row + 2}, time {stamps[row]}); {len(gaps)} gap(s): {shown}{more}. Fill or drop them before building, "
            "or let twinbench interpolate gaps up to a length with `fill_gaps`"
        )
    shown = "; ".join(f"{n} from {stamps[a]}, {k} step(s)" for a, n, k in gaps[:SHOWN])
    limit = f"gaps up to {policy.fill_gaps_minutes} min inside the series were filled; " if policy.fill_steps else ""
    raise DataError(
        f"{what}: {len(gaps)} gap(s) left: {shown}{more}. {limit}longer gaps, and gaps at the start or end "
        "(nothing to interpolate from), are not filled: fill them yourself, drop those rows, or allow longer "
        "gaps with `fill_gaps`"
    )
