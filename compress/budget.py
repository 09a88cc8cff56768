"""Budgeted passes: the most aggressive setting of a lossy pass within a quality budget.

A pass given `max_quality_loss_pct` tries settings on the **validation** split (never the test
split) against the model it received, on the target it builds for (torch, or ONNX Runtime for an
ONNX graph), and keeps the most aggressive one whose loss is within the budget. Two strategies:

- `first_within`: settings ordered from the most aggressive down (prune ratios, sampling steps,
  distillation rounds); the first within the budget wins.
- `keep_fp32`: accuracy-aware mixed precision as NNCF's `quantize_with_accuracy_control` and Intel
  Neural Compressor's tuning do it: convert every core part; if that breaks the budget, rank the
  parts by how much keeping each alone in fp32 recovers, then keep them in fp32 in that order until
  the budget holds.

Every try is traced (setting, validation loss, seconds) and the search's outcome is cached beside
the checkpoints, keyed like them, so a resumed run or another runtime reuses it. A budget that no
setting meets is `Unsupported`, naming the best setting found and its loss.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from models import creation
from models.checkpoint import identity
from models.errors import Unsupported
from models.grid.cache import cache_root
from models.registry import PredictFn

SEARCH_SPLIT = "val"  # the only split a search reads


def loss_pct(value: float, ref: float) -> float:
    """Quality loss in percent of the reference (metrics are lower-is-better): >= 0 is worse."""
    return 100.0 * (value - ref) / abs(ref) if ref else (0.0 if value == ref else math.inf)


class Search:
    """The trials of one budgeted pass on the validation split, against `reference` (the quality of
    the model the pass received, on the same target)."""

    def __init__(self, twin, what: str, budget_pct: float, reference: PredictFn, log: Callable[[str], None]) -> None:
        self.twin, self.what, self.budget_pct, self.log = twin, what, budget_pct, log
        self.reference_val = self.quality(reference)
        self.trace: list[dict] = []

    def quality(self, predict: PredictFn) -> float:
        return self.twin.evaluate(predict, SEARCH_SPLIT).value

    def trial(self, setting, predict: Callable[[], PredictFn]) -> float:
        """The validation loss of `setting` (its predict function built by `predict()`, timed too)."""
        start = time.perf_counter()
        loss = loss_pct(self.quality(predict()), self.reference_val)
        seconds = time.perf_counter() - start
        self.trace.append({"setting": setting, "val_loss_pct": round(loss, 4), "seconds": round(seconds, 2)})
        self.log(f"  {self.what} search: {json.dumps(setting)} -> {loss:+.3f} % on validation ({seconds:.1f} s)")
        return loss

    def within(self, loss: float) -> bool:
        return loss <= self.budget_pct

    def outcome(self, chosen) -> dict:
        return {
            "budget_pct": self.budget_pct, "split": SEARCH_SPLIT, "reference_val": self.reference_val,
            "chosen": chosen, "trace": self.trace,
        }  # fmt: skip

    def failed(self, best_of: Iterable[dict] | None = None) -> dict:
        """The outcome of a search no setting of which met the budget, naming the best it found."""
        tried = list(best_of if best_of is not None else self.trace)
        best = min(tried, key=lambda t: t["val_loss_pct"]) if tried else None
        found = (
            f"the best setting found was {json.dumps(best['setting'])} at {best['val_loss_pct']:+.3f} %"
            if best
            else "nothing was tried"
        )
        reason = (
            f"{self.what}: no setting meets max_quality_loss_pct = {self.budget_pct:g} on the validation split; "
            f"{found} (reference {self.reference_val:.6g})"
        )
        return {**self.outcome(None), "unsupported": reason}


def first_within(search: Search, settings: Sequence, predict_for: Callable[[object], PredictFn]) -> dict:
    """`settings` from the most aggressive down; the first whose loss is within the budget."""
    for setting in settings:
        if search.within(search.trial(setting, lambda s=setting: predict_for(s))):
            return search.outcome(setting)
    return search.failed()


def keep_fp32(search: Search, parts: Sequence[str], predict_for: Callable[[frozenset], PredictFn]) -> dict:
    """The fewest `parts` to keep in fp32 (the rest converted) for the loss to stay within the budget.
    chosen = {"kept_fp32": [...], "converted": n}. Keeping every part converts nothing: not a result."""
    if search.within(search.trial({"kept_fp32": []}, lambda: predict_for(frozenset()))):
        return search.outcome({"kept_fp32": [], "converted": len(parts)})
    if len(parts) < 2:
        return search.failed()
    # Sensitivity: the loss left when a part alone stays fp32 (lower: that part costs more).
    alone = {p: search.trial({"kept_fp32": [p]}, lambda p=p: predict_for(frozenset({p}))) for p in parts}
    ranked = sorted(parts, key=lambda p: (alone[p], p))
    if search.within(alone[ranked[0]]):
        return search.outcome({"kept_fp32": [ranked[0]], "converted": len(parts) - 1})
    kept = [ranked[0]]
    for part in ranked[1:-1]:  # keeping all of them would convert nothing
        kept.append(part)
        setting = {"kept_fp32": list(kept)}
        if search.within(search.trial(setting, lambda k=frozenset(kept): predict_for(k))):
            return search.outcome({"kept_fp32": list(kept), "converted": len(parts) - len(kept)})
    return search.failed()


def search_path(twin, key: tuple, root: Path | None = None) -> Path:
    """<cache>/searches/<twin>/<grid>/<key>.json: a search's outcome, keyed as a checkpoint would be."""
    digest = hashlib.sha256(json.dumps(identity(twin, key), sort_keys=True).encode()).hexdigest()[:16]
    return (root or cache_root()) / "searches" / twin.name / twin.grid.grid / f"{digest}.json"


def cached_search(
    twin, key: tuple, run: Callable[[], dict], log: Callable[[str], None], accept: Callable[[object], bool]
) -> dict:
    """The outcome of a search: loaded if cached, else run and saved. Raises `Unsupported` for a
    budget that nothing met (cached too: asking again gives the same answer without searching).
    `accept(chosen)` says whether a cached choice is one this search could have made: anything
    else (a damaged or edited file) is searched again and replaced."""
    path = search_path(twin, key)
    outcome = _load(path, accept)
    if outcome is None:
        with creation.window("search") as searched:  # kept with the outcome: loading never re-measures
            outcome = run()
        outcome = {**outcome, "creation": searched.cost.as_dict()}
        _save(path, outcome, log)
    else:
        log(f"  search loaded from {path}")
        creation.loaded(outcome.get("creation"), "search")
    if outcome.get("unsupported"):
        raise Unsupported(outcome["unsupported"])
    return outcome


def _load(path: Path, accept: Callable[[object], bool]) -> dict | None:
    try:
        outcome = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(outcome, dict) or not isinstance(outcome.get("trace"), list):
        return None
    if isinstance(outcome.get("unsupported"), str) and outcome.get("chosen") is None:
        return outcome
    return outcome if "unsupported" not in outcome and accept(outcome.get("chosen")) else None


def _save(path: Path, outcome: dict, log: Callable[[str], None]) -> None:
    """Written whole or not at all (a temporary file renamed over it); a cache that cannot be
    written costs the next run a search, not this one its result."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(outcome, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        log(f"  search outcome not cached ({path}: {e.strerror or e})")


def kept_subset_of(parts: Iterable[str]) -> Callable[[object], bool]:
    """`accept` for `keep_fp32`: a choice keeping some of `parts` in fp32."""
    known = set(parts)

    def accept(chosen) -> bool:
        kept = chosen.get("kept_fp32") if isinstance(chosen, dict) else None
        return isinstance(kept, list) and all(isinstance(k, str) for k in kept) and set(kept) <= known

    return accept


def one_of(settings: Iterable) -> Callable[[object], bool]:
    """`accept` for `first_within` and the like: one of the settings the search tries."""
    allowed = list(settings)
    return lambda chosen: not isinstance(chosen, bool) and chosen in allowed
