"""Statistics of repeated measurements: median, bootstrap 95% CI, coefficient of variation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    median: float
    ci95_low: float
    ci95_high: float
    cv: float  # std / mean (sample std, ddof=1); 0 for a single sample
    n: int


def summarize(samples, n_boot: int = 2000, seed: int = 0) -> Summary:
    """Median with a percentile-bootstrap 95% CI of the median, and the CV of the samples.

    Every sample is kept: the median is reported with its spread, never the best run.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"need a non-empty 1-D array of finite samples, got {x!r}")
    median = float(np.median(x))
    if len(x) == 1:
        return Summary(median, median, median, 0.0, 1)
    rng = np.random.default_rng(seed)
    boots = np.median(x[rng.integers(0, len(x), (n_boot, len(x)))], axis=1)
    low, high = np.percentile(boots, [2.5, 97.5])
    mean = x.mean()
    cv = float(x.std(ddof=1) / abs(mean)) if mean != 0 else float("inf")
    return Summary(median, float(low), float(high), cv, len(x))


def percentiles_ms(seconds) -> dict[str, float]:
    """Latency percentiles in milliseconds from per-iteration timings in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    ci = summarize(ms, n_boot=500)  # the p50's noise, for comparing runs (`twinbench compare`)
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(ms.mean()),
        "p50_ci95_low": ci.ci95_low,
        "p50_ci95_high": ci.ci95_high,
    }
