"""What a run will cost before it starts: the training it has to do (references and trained variants
whose weights are not cached) and its measuring, on one worker and on many. `twinbench run --dry-run`
prints it; the runner logs it and checks it against --max-minutes before a run folder exists.

Where each training figure comes from, in this order:
- a checkpoint that is cached (weights matching the hash its meta records) costs nothing: it is
  loaded, not trained;
- a reference: its time an epoch in earlier trainings of the same twin version, config and device
  in this cache (the checkpoint metas' `summary`, any grid, this grid preferred) times max_epochs,
  else the figure its twin class declares per (model size, device) in `training_seconds`, with its
  basis (smoke CPU figures are measured; full-size GPU figures are rough: no GPU has trained these
  models yet), else unknown (printed as such, counted as 0);
- a trained variant (`Pass.training`): its epochs x its cost an epoch (a share of the reference's
  epoch) x the reference's time an epoch.
Epochs are counted in full (max_epochs): early stopping can only make training shorter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.plan import Cell, RunPlan, Shard
from bench.run.planning import make_shards, runs_here, unsupported_reason
from compress.base import Variant, step_spec
from models.checkpoint import checkpoint_path
from models.errors import TwinbenchError
from models.grid.cache import cache_root, load_grid
from models.registry import TrainableTwin, get_twin

DRY_RUN_WORKERS = (1, 8)
DOES_NOT_FIT = "does not fit"  # a dry run saying so exits 1, as the run it describes would
RAY_SHARD_SIZE = 4  # the runner's default shard size on several workers (runner._default_shard_size)
SETUP_S_PER_CELL = 6.0  # accuracy pass, session build, warm-up: a rough figure for the estimate


@dataclass(frozen=True)
class TrainingJob:
    """One set of weights a run needs: a twin's reference on a grid, or what a variant's pass trains."""

    grid: str
    twin: str
    what: str  # "reference", or the variant and what its pass trains
    seconds: float | None  # estimated training time; None: no figure for this model size and device
    basis: str  # where `seconds` comes from
    cached: bool = False  # weights in the checkpoint cache: loaded, not trained
    chain: tuple[dict, ...] = ()  # a variant's: the steps naming its checkpoint (models.checkpoint)

    @property
    def reference(self) -> bool:
        return not self.chain

    @property
    def todo_s(self) -> float:
        return 0.0 if self.cached or self.seconds is None else self.seconds


@dataclass(frozen=True)
class TrainingNeeds:
    """The training a plan needs, and what could not be looked up."""

    jobs: tuple[TrainingJob, ...]
    notes: tuple[str, ...] = ()

    @property
    def todo(self) -> tuple[TrainingJob, ...]:
        return tuple(j for j in self.jobs if not j.cached)

    @property
    def unknown(self) -> tuple[TrainingJob, ...]:
        return tuple(j for j in self.todo if j.seconds is None)

    def wall_seconds(self, workers: int) -> float:
        """Training on `workers` devices: the references first, then the variants (which need their
        reference's weights), each phase longest first onto the least loaded worker. On one worker
        the sum; on several, about what shards that train on demand under the checkpoint lock take."""
        total = 0.0
        for phase in (True, False):
            loads = [0.0] * max(1, workers)
            for seconds in sorted((j.todo_s for j in self.jobs if j.reference is phase), reverse=True):
                loads[loads.index(min(loads))] += seconds
            total += max(loads)
        return total


def training_needs(plan: RunPlan, root: Path | None = None) -> TrainingNeeds:
    """Every reference and trained variant the plan needs, cached or not, with its estimated time."""
    jobs, notes = [], []
    for grid in plan.grids:
        data = _grid_or_none(grid, root)
        if data is None:
            notes.append(f"{grid}: no data cache here, so no checkpoint of it either: all its training is counted")
        for name in plan.twins:
            jobs += _twin_jobs(plan, grid, data, get_twin(name), root)
    return TrainingNeeds(tuple(jobs), tuple(notes))


def _twin_jobs(plan: RunPlan, grid: str, data, cls: type, root: Path | None) -> list[TrainingJob]:
    """A twin's reference on a grid, then what its variants' passes train (each checkpoint once)."""
    config = cls.config_for(plan.model_size)
    twin = cls(data, config) if data is not None else None

    def job(chain: tuple, what: str, seconds: float | None, basis: str) -> TrainingJob:
        cached = twin is not None and _usable(checkpoint_path(twin, root, chain))
        return TrainingJob(grid, cls.name, what, seconds, basis, cached, chain)

    ref_s, basis = reference_seconds(cls, config, plan.model_size, plan.device, grid, root)
    jobs = [job((), "reference", ref_s, basis)]
    fit = getattr(config, "fit", None)
    per_epoch = ref_s / fit.max_epochs if ref_s is not None and fit is not None else None
    seen: set[str] = set()
    for variant in plan.variants[1:]:
        for i, p in enumerate(variant.chain):
            if p.unsupported_for(cls):  # the variant stops here: nothing after it trains
                break
            for t in p.training(cls, config):
                chain = (*variant.spec[:i], {**step_spec(p), **dict(t.key)})  # as PassContext.cache_key
                key = json.dumps(chain, sort_keys=True)
                if key in seen:  # `distill` and `distill -> half` share the student's weights
                    continue
                seen.add(key)
                what = f"{Variant(variant.chain[: i + 1]).name}: {t.what}"
                if per_epoch is None:
                    jobs.append(job(chain, what, None, "unknown: no figure for the reference's epoch"))
                else:
                    how = f"{t.epochs} epochs x {t.cost:.2f} of a reference epoch ({per_epoch:.2f} s)"
                    jobs.append(job(chain, what, t.epochs * t.cost * per_epoch, how))
    return jobs


def reference_seconds(
    cls: type, config, size: str, device: str, grid: str, root: Path | None = None
) -> tuple[float | None, str]:
    """A reference's training time (all max_epochs) and where the figure comes from."""
    if not issubclass(cls, TrainableTwin):
        return 0.0, "ships trained weights: loaded, not trained"
    if (measured := _measured_here(cls, config, device, grid, root)) is not None:
        return measured
    declared = getattr(cls, "training_seconds", {}).get((size, device))
    if declared is not None:
        seconds, basis = declared
        return float(seconds), basis
    return None, f"unknown: {cls.name} declares no training time for {size} size on {device} (training_seconds)"


def _measured_here(cls: type, config, device: str, grid: str, root: Path | None) -> tuple[float, str] | None:
    """The slowest epoch of earlier trainings of this twin version and config on `device` in this
    cache (their checkpoint metas), times max_epochs; this grid's trainings if there are any."""
    fit = getattr(config, "fit", None)
    if fit is None or not dataclasses.is_dataclass(config):
        return None
    want = _comparable(dataclasses.asdict(config))
    per_epoch: dict[str, list[float]] = {}
    for meta_path in ((root or cache_root()) / "checkpoints" / cls.name).glob("*/*.json"):  # references only
        try:
            meta = json.loads(meta_path.read_text())
            summary = meta.get("summary") or {}
            same = meta.get("twin_version") == cls.version and _comparable(meta.get("config")) == want
            epochs, seconds = int(summary["epochs"]), float(summary["train_seconds"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
            continue
        if same and summary.get("device") == device and epochs > 0 and seconds > 0:
            per_epoch.setdefault(meta_path.parent.name, []).append(seconds / epochs)
    if not per_epoch:
        return None
    values, where = (
        (per_epoch[grid], "this grid")
        if grid in per_epoch
        else ([v for vs in per_epoch.values() for v in vs], ", ".join(sorted(per_epoch)))
    )
    slowest = max(values)
    return slowest * fit.max_epochs, (
        f"measured here: up to {slowest:.2f} s an epoch in {len(values)} earlier training(s) on {where} "
        f"x {fit.max_epochs} epochs"
    )


def _comparable(config) -> object:
    """A config as a checkpoint's identity holds it (JSON, without fit.max_seconds)."""
    config = json.loads(json.dumps(config))
    if isinstance(config, dict) and isinstance(config.get("fit"), dict):
        config["fit"].pop("max_seconds", None)
    return config


def _usable(path: Path) -> bool:
    """Would models.checkpoint load this checkpoint rather than train it: its weights and, beside
    them, a meta (`<key>.json`) recording their SHA-256? Its name is the hash of its identity."""
    try:
        recorded = json.loads(path.with_suffix(".json").read_text()).get("weights_sha256")
        return recorded == hashlib.sha256(path.read_bytes()).hexdigest()
    except (OSError, ValueError, AttributeError):
        return False


def _grid_or_none(grid: str, root: Path | None):
    try:
        return load_grid(grid, root)
    except TwinbenchError:  # not built here (or stale): then no checkpoint of it can be used either
        return None


@dataclass(frozen=True)
class Estimate:
    workers: int
    shards: int
    measuring_s: float
    training_s: float

    @property
    def total_s(self) -> float:
        # Training first, then measuring: an upper bound where shards of a trained twin could measure
        # while others still train.
        return self.measuring_s + self.training_s


def estimate(plan: RunPlan, todo: list[Cell], workers: int, shard_size: int | None, needs: TrainingNeeds) -> Estimate:
    shards = make_shards(plan, todo, shard_size)
    return Estimate(workers, len(shards), estimate_wall_seconds(plan, shards, workers), needs.wall_seconds(workers))


def describe(
    plan: RunPlan,
    todo: list[Cell],
    needs: TrainingNeeds,
    shard_size: int | None = None,
    max_minutes: float | None = None,
) -> str:
    """The dry run's printout: cells, shards, training to do and the estimated time on one worker
    and on several."""
    here = runs_here(plan)
    cells = plan.cells()
    lines = [
        f"plan: suite {plan.suite} on {plan.device}, {plan.model_size}-size models: {len(plan.grids)} grid(s) x "
        f"{len(plan.twins)} twin(s) x {len(plan.variants)} variants (reference included) x {len(plan.runtimes)} "
        f"runtime(s) x {len(plan.batch_sizes)} batch size(s); windows {plan.window_s:g} s x {plan.repetitions}",
    ]
    if plan.reference_runtimes:
        lines.append(f"  the reference also on {', '.join(plan.reference_runtimes)} (every ratio is taken to it)")
    if not here:
        lines.append("  planned for cuda on a machine without CUDA: an estimate only, this machine cannot run it")
    reasons = {c.key: unsupported_reason(c, here) for c in cells}
    known = Counter(r for r in reasons.values() if r is not None)
    todo_keys = {c.key for c in todo}
    done = "" if len(todo) == len(cells) else f", {len(cells) - len(todo)} already recorded"
    lines.append(
        f"cells: {len(cells)}{done}; {sum(known.values())} known to be unsupported "
        f"{'here' if here else 'on any ' + plan.device + ' machine'} (recorded at once with the reason, not measured)"
    )
    for twin in plan.twins:
        mine = [c for c in cells if c.twin == twin]
        unsupported = sum(1 for c in mine if reasons[c.key] is not None)
        left = sum(1 for c in mine if c.key in todo_keys and reasons[c.key] is None)
        lines.append(f"  {twin:24} {len(mine):5} cells, {unsupported} unsupported, {left} to measure")
    for reason, n in known.most_common():
        lines.append(f"  {n:5} x {reason}")
    one, many = DRY_RUN_WORKERS
    single = estimate(plan, todo, one, shard_size, needs)
    spread = estimate(plan, todo, many, shard_size or RAY_SHARD_SIZE, needs)
    lines.append(
        f"shards: {single.shards} on {one} worker, {spread.shards} on {many} workers "
        f"({shard_size or RAY_SHARD_SIZE} variants a shard besides the reference)"
    )
    lines += _training_lines(plan, needs)
    unit = "GPU" if plan.device == "cuda" else "CPU worker"
    lines.append(f"estimated time {'':14} measuring   training      total")
    for label, e in ((f"{one} {unit}", single), (f"{many} {unit}s (Ray)", spread)):
        lines.append(f"  {label:26} {_min(e.measuring_s)}  {_min(e.training_s)}  {_min(e.total_s)}")
    if needs.unknown:
        lines.append(f"  plus {len(needs.unknown)} training(s) of unknown length (counted as 0)")
    if max_minutes is not None:
        verdict = "fits" if single.total_s <= 60 * max_minutes else DOES_NOT_FIT
        lines.append(f"  on {one} {unit}: {verdict} in --max-minutes {max_minutes:g}")
    lines.append(
        f"  measuring: each cell {plan.window_s:g} s x (2 + {plan.repetitions}) windows + ~{SETUP_S_PER_CELL:g} s of setup, "
        "plus idle windows; training: all max_epochs, first, then measuring. Rough figures, not a promise."
    )
    return "\n".join(lines)


def estimate_shard_seconds(plan: RunPlan, shard: Shard) -> float:
    """Accuracy pass, warm-up, latency pass and windows of each cell, plus the idle windows. A cell
    known to be unsupported (`unsupported_reason`) is recorded at once: it costs nothing here."""
    per_cell = SETUP_S_PER_CELL + plan.window_s * (2 + plan.repetitions)
    here = runs_here(plan)
    measured = [c for c in shard.measured if unsupported_reason(c, here) is None]
    scenario_s = sum(_scenario_seconds(c.scenario) for c in measured if c.scenario is not None)
    offline = sum(1 for c in measured if c.scenario is None)
    return offline * per_cell + scenario_s + plan.repetitions * plan.window_s


PEAK_SEARCH_RUNS = 12  # LoadGen's peak search: its boundary steps and ~10 binary-search runs


def _scenario_seconds(scenario) -> float:
    """A LoadGen cell: its minimum duration (a peak: the search's runs and the metered one)."""
    runs = 1 + (PEAK_SEARCH_RUNS if scenario.name == "server" and scenario.target_qps is None else 0)
    return SETUP_S_PER_CELL + runs * scenario.duration_s


def estimate_wall_seconds(plan: RunPlan, shards: list[Shard], workers: int) -> float:
    """Makespan of the shards on `workers` devices, longest first onto the least loaded (as the
    executors schedule them)."""
    loads = [0.0] * max(1, workers)
    for shard in shards:  # make_shards sorts them longest first
        i = loads.index(min(loads))
        loads[i] += estimate_shard_seconds(plan, shard)
    return max(loads)


def _training_lines(plan: RunPlan, needs: TrainingNeeds) -> list[str]:
    todo = needs.todo
    lines = [
        f"training to do: {len(todo)} of {len(needs.jobs)} ({len(needs.jobs) - len(todo)} cached), "
        f"{plan.model_size} size on {plan.device}"
    ]
    for note in needs.notes:
        lines.append(f"  {note}")
    for grid in plan.grids:
        for twin in plan.twins:
            mine = [j for j in needs.jobs if (j.grid, j.twin) == (grid, twin)]
            if not mine:
                continue
            lines.append(f"  {grid} / {twin}")
            for j in mine:
                if j.cached:
                    lines.append(f"    cached    {'':>8}  {j.what}")
                else:
                    seconds = "unknown" if j.seconds is None else f"~{j.seconds:.0f} s"
                    lines.append(f"    to train  {seconds:>8}  {j.what}  [{j.basis}]")
    return lines


def _min(seconds: float) -> str:
    return f"{seconds / 60:7.1f} min"
