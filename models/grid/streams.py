"""Deduplicating metering streams and splitting time without leakage (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Dedup:
    """Which channels to keep: one per distinct profile."""

    keep: np.ndarray  # (K,) indices into the input channels, in input order
    group_of: np.ndarray  # (C,) index into `keep` of each input channel's representative; -1 if constant


def deduplicate_channels(values: np.ndarray, min_corr: float) -> Dedup:
    """Keep one channel per distinct profile.

    Many SimBench channels are the same base profile rescaled per element; they carry no extra
    information, and a forecaster trained on 28 copies of four profiles would report a misleadingly
    easy task. Two channels are the same profile when their Pearson correlation exceeds `min_corr`.
    Greedy in channel order: a channel joins the first kept channel it matches, else it is kept.
    Constant channels (no variance) carry nothing to forecast and are dropped (group -1).
    """
    values = np.asarray(values, dtype=np.float64)
    centred = values - values.mean(axis=0)
    norm = np.linalg.norm(centred, axis=0)
    constant = norm <= 1e-12 * max(1.0, float(np.abs(values).max(initial=0.0)))
    unit = np.where(constant, 0.0, centred / np.where(constant, 1.0, norm))
    corr = unit.T @ unit

    keep: list[int] = []
    group_of = np.full(values.shape[1], -1, dtype=np.int64)
    for c in range(values.shape[1]):
        if constant[c]:
            continue
        match = next((k for k, kept in enumerate(keep) if corr[c, kept] > min_corr), None)
        if match is None:
            keep.append(c)
            match = len(keep) - 1
        group_of[c] = match
    return Dedup(keep=np.array(keep, dtype=np.int64), group_of=group_of)


def time_split(n_steps: int, train_frac: float, val_frac: float) -> np.ndarray:
    """(n_steps,) int8 split label by time: 0 train (first), 1 val, 2 test (last); never shuffled."""
    train_end = int(round(n_steps * train_frac))
    val_end = int(round(n_steps * (train_frac + val_frac)))
    if not 0 < train_end < val_end < n_steps:
        raise ValueError(f"split fractions {train_frac}/{val_frac} leave an empty split")
    split = np.full(n_steps, 2, dtype=np.int8)
    split[:train_end] = 0
    split[train_end:val_end] = 1
    return split


def window_starts(split: np.ndarray, which: int, length: int, stride: int = 1) -> np.ndarray:
    """Start indices of windows of `length` consecutive steps lying wholly inside split `which`.

    A forecasting sample (history + horizon) that straddles a split boundary would let training
    see validation or test targets, so such windows are not offered to any split.
    """
    inside = (np.asarray(split) == which).astype(np.int64)
    if length <= 0 or len(inside) < length:
        return np.zeros(0, dtype=np.int64)
    run = np.convolve(inside, np.ones(length, dtype=np.int64), mode="valid")
    starts = np.flatnonzero(run == length)
    return starts[(starts - starts[0]) % stride == 0] if len(starts) else starts


def train_stats(values: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std over training rows only (std floored so division is safe)."""
    rows = np.asarray(values, dtype=np.float64)[np.asarray(split) == 0]
    mean = rows.mean(axis=0)
    std = rows.std(axis=0)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)
