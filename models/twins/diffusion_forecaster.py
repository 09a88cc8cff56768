"""diffusion-forecaster: sample the next 24 steps of bus voltage magnitudes from the last 96 states.

A conditional denoising diffusion model: DDPM training (cosine schedule) of a 1-D convolutional
denoiser over the forecast horizon, conditioned on an encoding of the last 96
steps of per-node [vm, p, q] and on the calendar. Sampling is deterministic DDIM (eta = 0) with a
fixed number of steps, unrolled inside the module, so one forward call is one whole inference and
the same loop runs in PyTorch and, exported, in ONNX Runtime. The noise is an input: the same noise
gives the same samples on every runtime.

The denoiser predicts the clean sample x0 rather than the noise: with a small model and few DDIM
steps, recovering x0 from a noise estimate divides by sqrt(alpha_bar) ~ 0.003 at the noisiest step
and blows the error up (tried: CRPS four times worse than climatology); predicting x0 does not.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from models.errors import Unsupported
from models.grid.cache import STEPS_PER_DAY
from models.grid.powerflow import VM_BAND_PU, outside_band
from models.grid.streams import window_starts
from models.registry import (
    Evaluation,
    PredictFn,
    SteppedSampling,
    TrainableTwin,
    input_scale,
    register_twin,
)
from models.surgery import keep_rows, shrink_pair
from models.training import Distillation, FitConfig, fit, teacher_on

DAYS_PER_WEEK = 7


@dataclass(frozen=True)
class DiffusionConfig:
    context: int = 96
    horizon: int = 24
    hidden: int = 64
    blocks: int = 3
    train_steps: int = 100  # diffusion steps of the DDPM forward process
    sample_steps: int = 10  # DDIM steps at inference (the `diffusion-steps` pass lowers this)
    n_samples: int = 16  # ensemble members per forecast for CRPS
    windows_per_epoch: int = 3072
    fit: FitConfig = FitConfig(lr=2e-3, batch_size=128, max_epochs=30, patience=6, max_seconds=1800)

    def __post_init__(self) -> None:
        if not 1 <= self.sample_steps <= self.train_steps:
            raise ValueError("sample_steps must be in 1..train_steps")
        if self.context % 16:
            raise ValueError("context must be a multiple of 16 (the encoder downsamples by 16)")
        if self.n_samples < 2:
            raise ValueError("n_samples must be >= 2 for an ensemble")


def cosine_alpha_bar(steps: int) -> Tensor:
    """Cumulative signal fraction per step (Nichol & Dhariwal's cosine schedule)."""
    s = 0.008
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = (f / f[0])[1:]
    return alpha_bar.clamp(1e-5, 0.9999).float()


def ddim_timesteps(train_steps: int, sample_steps: int) -> tuple[int, ...]:
    """DDIM's descending subsequence of the training steps, from pure noise (T-1) down to 0.

    Plain Python on purpose: the unrolled sampling loop is traced by torch.compile and the ONNX
    exporter, and must see constants, not array code."""
    if sample_steps == 1:
        return (train_steps - 1,)
    points = {round((train_steps - 1) * (1 - i / (sample_steps - 1))) for i in range(sample_steps)}
    return tuple(sorted(points, reverse=True))


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ResBlock(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv1d(hidden, hidden, 3, padding=1)
        self.conv2 = torch.nn.Conv1d(hidden, hidden, 3, padding=1)
        self.film = torch.nn.Linear(hidden, 2 * hidden)

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        y = self.conv1(torch.nn.functional.silu(h)) * (1 + scale) + shift
        return h + self.conv2(torch.nn.functional.silu(y))


class Denoiser(torch.nn.Module):
    """(x_t (B, N, H), diffusion step t (B,), context (B, hidden)) -> predicted clean x0 (B, N, H)."""

    def __init__(self, nodes: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.time_mlp = torch.nn.Sequential(
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden)
        )
        self.conv_in = torch.nn.Conv1d(nodes, hidden, 3, padding=1)
        self.blocks = torch.nn.ModuleList(ResBlock(hidden) for _ in range(blocks))
        self.conv_out = torch.nn.Conv1d(hidden, nodes, 3, padding=1)

    def forward(self, x_t: Tensor, t: Tensor, context: Tensor) -> Tensor:
        cond = self.time_mlp(timestep_embedding(t, self.hidden)) + context
        h = self.conv_in(x_t)
        for block in self.blocks:
            h = block(h, cond)
        return self.conv_out(torch.nn.functional.silu(h))


class DiffusionForecaster(torch.nn.Module):
    """(history (B, 96, N, 3) raw [vm_pu, p_inj_pu, q_inj_pu], calendar (B, 4), noise (B, N, 24))
    -> vm_pu samples (B, 24, N), one per noise draw."""

    def __init__(self, cfg: DiffusionConfig, grid, delta_std: np.ndarray) -> None:
        super().__init__()
        stats = grid.stats
        n = len(grid.graph["bus_ids"])
        stack = lambda *names: torch.as_tensor(np.stack([stats[k] for k in names], -1))  # noqa: E731
        self.register_buffer("hist_mean", stack("vm_pu_mean", "p_inj_pu_mean", "q_inj_pu_mean"))
        self.register_buffer(
            "hist_std", torch.as_tensor(input_scale(stack("vm_pu_std", "p_inj_pu_std", "q_inj_pu_std").numpy()))
        )
        # The model forecasts the change from the last observed state, scaled per node.
        self.register_buffer("delta_std", torch.as_tensor(delta_std, dtype=torch.float32))
        self.register_buffer("alpha_bar", cosine_alpha_bar(cfg.train_steps))
        self.timesteps = ddim_timesteps(cfg.train_steps, cfg.sample_steps)
        h = cfg.hidden
        self.encoder = torch.nn.Sequential(
            torch.nn.Conv1d(3 * n, h, 5, padding=2),
            torch.nn.SiLU(),
            torch.nn.Conv1d(h, h, 4, stride=4),
            torch.nn.SiLU(),
            torch.nn.Conv1d(h, h, 4, stride=4),
            torch.nn.SiLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(h * cfg.context // 16, h),
        )
        self.calendar_mlp = torch.nn.Linear(4, h)
        self.denoiser = Denoiser(n, h, cfg.blocks)

    def encode(self, history: Tensor, calendar: Tensor) -> Tensor:
        x = (history - self.hist_mean) / self.hist_std  # (B, C, N, 3)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])  # (B, 3N, C)
        return self.encoder(x) + self.calendar_mlp(calendar)

    def to_target(self, history: Tensor, future_vm: Tensor) -> Tensor:
        """(B, H, N) future vm -> (B, N, H) normalised change from the last observed vm."""
        return ((future_vm - history[:, -1:, :, 0]) / self.delta_std).transpose(1, 2)

    def forward(self, history: Tensor, calendar: Tensor, noise: Tensor) -> Tensor:
        context = self.encode(history, calendar)
        x = noise
        for i in range(len(self.timesteps)):
            x = self.ddim_step(x, i, context, self.timesteps)
        return history[:, -1:, :, 0] + x.transpose(1, 2) * self.delta_std

    def ddim_step(self, x: Tensor, i: int, context: Tensor, timesteps: tuple[int, ...]) -> Tensor:
        """Step i of deterministic DDIM over `timesteps`: the next, less noisy x; after the last
        step, the predicted clean sample itself."""
        t = timesteps[i]
        x0 = self.denoiser(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device), context)
        if i + 1 == len(timesteps):
            return x0
        a_t, a_next = self.alpha_bar[t], self.alpha_bar[timesteps[i + 1]]
        eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


def calendar_features(week_step: np.ndarray) -> np.ndarray:
    """(B,) 15-minute steps after a Monday 00:00 of the first forecast step -> (B, 4) sin/cos of its
    time of day and of its day of the week (Monday = 0), by the clock: what a deployment computes."""
    day = 2 * np.pi * (week_step % STEPS_PER_DAY) / STEPS_PER_DAY
    weekday = 2 * np.pi * ((week_step // STEPS_PER_DAY) % DAYS_PER_WEEK) / DAYS_PER_WEEK
    return np.stack([np.sin(day), np.cos(day), np.sin(weekday), np.cos(weekday)], -1).astype(np.float32)


def violation_events(target: np.ndarray, band: tuple[float, float] = VM_BAND_PU) -> np.ndarray:
    """(W, H, N) vm -> (W, N) bool: the trajectory leaves the band (strictly) at some horizon step."""
    return outside_band(target, band).any(axis=1)


def violation_probability(samples: np.ndarray, band: tuple[float, float] = VM_BAND_PU) -> np.ndarray:
    """(W, M, H, N) sampled vm -> (W, N): the fraction of the M samples whose trajectory leaves the
    band at some horizon step, the forecast's probability of a violation in that window at that bus."""
    return outside_band(samples, band).any(axis=2).mean(axis=1)


def violation_brier(samples: np.ndarray, target: np.ndarray, band: tuple[float, float] = VM_BAND_PU) -> float:
    """Brier score of `violation_probability` against `violation_events` of the target, over every
    (window, bus): mean of (p - 1{event})^2; 0 is perfect, 1 is sure and always wrong."""
    p, event = violation_probability(samples, band), violation_events(target, band)
    return float(np.mean((p - event) ** 2))


def violation_recall(
    samples: np.ndarray, target: np.ndarray, band: tuple[float, float] = VM_BAND_PU, threshold: float = 0.5
) -> float:
    """Share of the (window, bus) violation events of the target that the forecast flags, i.e. gives
    a `violation_probability` >= threshold (at least half the samples at 0.5). 1.0 when the target
    has no event (nothing to miss)."""
    event = violation_events(target, band)
    if not event.any():
        return 1.0
    return float((violation_probability(samples, band)[event] >= threshold).mean())


# What `interval90_coverage` gives for an ensemble drawn from the target's own distribution, by
# ensemble size (200,000 draws of standard normal ensembles and targets, two seeds;
# tests/twins/test_event_metrics.py checks them): below it an ensemble is under-dispersed, above it over-dispersed.
CALIBRATED_COVERAGE = {16: 0.805, 32: 0.852, 64: 0.873}


def interval90_coverage(samples: np.ndarray, target: np.ndarray) -> float:
    """Share of target values (every window, horizon step and bus) inside the samples' central 90 %
    interval: between their 5 % and 95 % quantiles (numpy's linear interpolation), edges included.
    A point forecast covers only exact hits.

    The quantiles of M samples span less than 90 % of the distribution they are drawn from, so a
    perfectly calibrated M-member ensemble covers less than 0.9: about 0.80 for M = 16 (the smoke
    twin's ensemble), 0.85 for M = 32 (the full one's) and 0.87 for M = 64 (the climatology
    baseline); see CALIBRATED_COVERAGE.
    Compare coverages at equal M, or each against its own calibrated value."""
    low, high = np.quantile(samples, [0.05, 0.95], axis=1)
    return float(((low <= target) & (target <= high)).mean())


@register_twin
class DiffusionForecasterTwin(TrainableTwin, SteppedSampling):
    name = "diffusion-forecaster"
    # 2: calendar inputs by the clock of the grid's own start (was: every grid started Friday 00:00).
    # SimBench grids get the same features as before, but every checkpoint of version 1 retrains.
    version = 2
    summary = "conditional denoising diffusion (DDPM-trained, DDIM sampling) over future bus vm_pu trajectories"
    data_files = "trajectories.npz"
    metric = "crps of vm_pu (non-slack nodes)"
    baseline = "climatology (training states at the same time of day)"
    required_baselines = ("climatology",)
    input_names = ("history", "calendar", "noise")
    output_name = "vm_samples"
    # The reference's training in seconds, at most (all max_epochs), by (size, device), with where
    # the figure comes from: a run's estimate before anything is trained (bench/run/estimate.py).
    training_seconds = {
        ("smoke", "cpu"): (55.0, "measured: 23 to 53 s for 30 epochs on 2 CPU cores (checkpoint metas, README)"),
        # Each step gathers its 256 windows on the CPU (~29 MB of history for ~100 buses) and copies
        # them over: ~30 ms a step assumed, the model itself a few ms. Rough: no GPU has trained it.
        ("full", "cuda"): (230.0, "rough, no GPU has trained it: 60 epochs x 128 steps x ~30 ms"),
    }
    eval_stride = 24  # one forecast every 6 h: consecutive windows share almost all their targets
    climatology_members = 64

    @classmethod
    def config_for(cls, size: str) -> DiffusionConfig:
        if size == "smoke":
            return DiffusionConfig()
        return DiffusionConfig(
            hidden=192,
            blocks=6,
            train_steps=1000,
            sample_steps=50,
            n_samples=32,
            windows_per_epoch=32768,
            fit=FitConfig(lr=1e-3, batch_size=256, max_epochs=60, patience=8, max_seconds=7200),
        )

    def __init__(self, grid, config: DiffusionConfig) -> None:
        super().__init__(grid, config)
        traj = grid.trajectories
        self.split = traj["split"]
        self.states = np.stack([traj["vm_pu"], traj["p_inj_pu"], traj["q_inj_pu"]], axis=-1)  # (T, N, 3)
        self.vm = traj["vm_pu"]

    def _delta_std(self) -> np.ndarray:
        """Per-node std of the change of vm over 1..horizon steps, on training windows only."""
        starts = window_starts(self.split, 0, self.config.context + self.config.horizon, stride=7)
        last = self.vm[starts + self.config.context - 1]
        future = self.vm[starts[:, None] + self.config.context + np.arange(self.config.horizon)[None]]
        return np.maximum((future - last[:, None]).std(axis=(0, 1)), 1e-5)

    @classmethod
    def scaled_config(cls, config: DiffusionConfig, width: float, depth: float) -> DiffusionConfig:
        hidden = max(2, 2 * round(config.hidden * width / 2))  # even: the timestep embedding is sin|cos
        return replace(config, hidden=hidden, blocks=max(1, round(config.blocks * depth)))

    def build_model(self) -> DiffusionForecaster:
        torch.manual_seed(self.config.fit.seed)
        return DiffusionForecaster(self.config, self.grid, self._delta_std()).eval()

    def depends_on(self) -> dict:
        # The calendar inputs count from the grid's start, which its arrays' hash does not cover:
        # the same profiles given another start must not load weights trained on the old calendar.
        return {"week_step_of_start": self.grid.week_step_of_start}

    def _starts(self, split: str, stride: int = 1) -> np.ndarray:
        return window_starts(self.split, self.split_index(split), self.config.context + self.config.horizon, stride)

    def _windows(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c, h = self.config.context, self.config.horizon
        history = self.states[starts[:, None] + np.arange(c)[None]]
        future = self.vm[starts[:, None] + c + np.arange(h)[None]]
        return history, calendar_features(self.grid.week_step_of_start + starts + c), future

    def _eval_windows(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(history, calendar) per forecast window and a fixed noise draw per (window, sample)."""
        history, calendar, _ = self._windows(self._starts(split, self.eval_stride))
        noise = np.random.default_rng(1234).standard_normal(
            (len(history) * self.config.n_samples, history.shape[2], self.config.horizon), dtype=np.float32
        )
        return history, calendar, noise

    def inputs(self, split: str) -> tuple[np.ndarray, ...]:
        """One row per (window, sample): history and calendar repeated, its own noise draw."""
        history, calendar, noise = self._eval_windows(split)
        k = self.config.n_samples
        return np.repeat(history, k, axis=0), np.repeat(calendar, k, axis=0), noise

    def targets(self, split: str) -> np.ndarray:
        return self._windows(self._starts(split, self.eval_stride))[2]

    def samples(self, predict_fn: PredictFn, split: str, windows_per_call: int = 16) -> np.ndarray:
        """(W, K, horizon, N) sampled vm trajectories: the rows of `inputs()`, built a chunk at a
        time so the repeated histories of a large grid never sit in memory all at once."""
        history, calendar, noise = self._eval_windows(split)
        k, out = self.config.n_samples, []
        for w in range(0, len(history), windows_per_call):
            rows = slice(w * k, (w + windows_per_call) * k)
            chunk = history[w : w + windows_per_call], calendar[w : w + windows_per_call]
            out.append(predict_fn(np.repeat(chunk[0], k, axis=0), np.repeat(chunk[1], k, axis=0), noise[rows]))
        out = np.concatenate(out)
        return out.reshape(-1, k, *out.shape[1:])

    def predictions(self, predict_fn: PredictFn, split: str) -> dict[str, np.ndarray]:
        samples = self.samples(predict_fn, split)
        return {"samples": samples, "pred": np.median(samples, axis=1), "target": self.targets(split)}

    def train(
        self, model: DiffusionForecaster, log, *, fit_cfg: FitConfig | None = None,
        distill: Distillation | None = None, device: str = "cpu",
    ) -> dict:  # fmt: skip
        cfg = fit_cfg or self.config.fit
        dev = torch.device(device)
        train_starts = self._starts("train")
        val_history, val_calendar, val_future = map(torch.from_numpy, self._windows(self._starts("val", 4)))
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        val_t = torch.randint(0, self.config.train_steps, (len(val_history),), generator=gen)
        val_noise = torch.randn(len(val_history), val_history.shape[2], self.config.horizon, generator=gen)
        val = tuple(t.to(dev) for t in (val_history, val_calendar, val_future, val_t, val_noise))
        model.to(dev)
        distill = teacher_on(distill, dev)

        def denoising_loss(history, calendar, future, t, noise, with_teacher=None):
            history, calendar, future, t, noise = (x.to(dev) for x in (history, calendar, future, t, noise))
            x0 = model.to_target(history, future)
            a = model.alpha_bar[t].view(-1, 1, 1)
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
            pred = model.denoiser(x_t, t, model.encode(history, calendar))
            if with_teacher is None:
                return torch.nn.functional.mse_loss(pred, x0)
            teacher = with_teacher.teacher  # the teacher's x0 estimate from the same noisy sample
            teacher_x0 = lambda: teacher.denoiser(x_t, t, teacher.encode(history, calendar))  # noqa: E731
            return with_teacher.loss(torch.nn.functional.mse_loss, pred, x0, teacher_x0)

        def epoch(generator):
            picked = torch.randperm(len(train_starts), generator=generator)[: self.config.windows_per_epoch]
            for idx in picked.split(cfg.batch_size):
                history, calendar, future = map(torch.from_numpy, self._windows(train_starts[idx.numpy()]))
                t = torch.randint(0, self.config.train_steps, (len(idx),), generator=generator)
                noise = torch.randn(future.shape[0], future.shape[2], future.shape[1], generator=generator)
                yield history, calendar, future, t, noise

        def val_loss():
            return denoising_loss(*val).item()

        # Early stopping looks at the labels alone, with or without a teacher.
        try:
            return fit(model, cfg, epoch, lambda batch: denoising_loss(*batch, with_teacher=distill), val_loss, log)
        finally:
            model.cpu()

    def train_step_student(
        self, student: DiffusionForecaster, teacher: DiffusionForecaster, log, fit_cfg: FitConfig | None = None,
        device: str = "cpu",
    ) -> dict:  # fmt: skip
        """Progressive distillation (Salimans & Ho, 2022): `student` samples over every other step of
        `teacher.timesteps`, and learns to land in one DDIM step where the teacher lands in two.

        From a training sample noised to the student's step t, the teacher takes its two steps to
        x''; the student's target is the clean-sample estimate from which one DDIM step t -> t''
        reaches x'' exactly (at the student's last step: the teacher's final sample itself).
        """
        teacher_steps = teacher.timesteps
        if student.timesteps != teacher_steps[::2]:
            raise ValueError("the student samples over every other step of its teacher")
        cfg = fit_cfg or self.config.fit
        dev = torch.device(device)
        train_starts = self._starts("train")
        teacher = copy.deepcopy(teacher).to(dev).eval()  # the pass's input model stays where it is
        student.to(dev)
        alpha_bar = teacher.alpha_bar

        def target_x0(x_t: Tensor, i: int, context: Tensor) -> Tensor:
            """The x0 the student must predict at its step i (the teacher's steps 2i and 2i + 1)."""
            x = x_t
            for k in (2 * i, 2 * i + 1)[: len(teacher_steps) - 2 * i]:
                x = teacher.ddim_step(x, k, context, teacher_steps)
            if 2 * i + 2 >= len(teacher_steps):  # the teacher finished: x is its clean sample
                return x
            a, a2 = alpha_bar[teacher_steps[2 * i]], alpha_bar[teacher_steps[2 * i + 2]]
            ratio = ((1 - a2) / (1 - a)).sqrt()
            return (x - ratio * x_t) / (a2.sqrt() - ratio * a.sqrt())

        def loss(history, calendar, future, i, noise):
            history, calendar, future, noise = (x.to(dev) for x in (history, calendar, future, noise))
            x0 = student.to_target(history, future)
            t = student.timesteps[i]
            x_t = alpha_bar[t].sqrt() * x0 + (1 - alpha_bar[t]).sqrt() * noise
            with torch.no_grad():
                target = target_x0(x_t, i, teacher.encode(history, calendar))
            t_batch = torch.full((len(x_t),), t, dtype=torch.long, device=dev)
            return torch.nn.functional.mse_loss(
                student.denoiser(x_t, t_batch, student.encode(history, calendar)), target
            )

        def epoch(generator):  # one student step per batch: the sampling loop's steps are Python ints
            picked = torch.randperm(len(train_starts), generator=generator)[: self.config.windows_per_epoch]
            for idx in picked.split(cfg.batch_size):
                history, calendar, future = map(torch.from_numpy, self._windows(train_starts[idx.numpy()]))
                i = int(torch.randint(0, len(student.timesteps), (1,), generator=generator))
                noise = torch.randn(future.shape[0], future.shape[2], future.shape[1], generator=generator)
                yield history, calendar, future, i, noise

        val = tuple(map(torch.from_numpy, self._windows(self._starts("val", 8))))
        val_noise = torch.randn(
            len(val[0]), val[2].shape[2], val[2].shape[1], generator=torch.Generator().manual_seed(1)
        )

        def val_loss():
            return sum(loss(*val, i, val_noise).item() for i in range(len(student.timesteps)))

        try:
            return fit(student, cfg, epoch, lambda batch: loss(*batch), val_loss, log)
        finally:
            student.cpu()

    def evaluate(self, predict_fn: PredictFn, split: str = "test") -> Evaluation:
        starts = self._starts(split, self.eval_stride)
        history, _, target = self._windows(starts)
        samples = self.samples(predict_fn, split)
        persistence = np.broadcast_to(history[:, -1:, :, 0], target.shape)[:, None]
        return Evaluation(
            primary="crps",
            metrics=self._scores(samples, target),
            baselines={
                "climatology": self._scores(self._climatology(starts), target),
                "persistence": self._scores(persistence, target),
            },
        )

    def _climatology(self, starts: np.ndarray) -> np.ndarray:
        """(W, M, horizon, N): training trajectories that start at the same time of day."""
        c, h = self.config.context, self.config.horizon
        train = self._starts("train")
        members = []
        for s in starts:
            same_time = train[(train + c) % STEPS_PER_DAY == (s + c) % STEPS_PER_DAY]
            pick = same_time[np.linspace(0, len(same_time) - 1, self.climatology_members).round().astype(int)]
            members.append(self.vm[pick[:, None] + c + np.arange(h)[None]])
        return np.stack(members)

    def _scores(self, samples: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """CRPS (scoringrules), MAE of the sample median, and the band-violation and interval scores
        of the module's functions, over non-slack nodes.

        samples (W, M, H, N), target (W, H, N). A point forecast (M = 1) scores its MAE as CRPS.
        """
        import scoringrules

        keep = np.arange(target.shape[-1]) != int(self.grid.graph["slack_node"])
        members = samples[..., keep].astype(np.float64)
        fct = np.moveaxis(members, 1, -1)
        obs = target[..., keep].astype(np.float64)
        return {
            "crps": float(np.mean(scoringrules.crps_ensemble(obs, fct, m_axis=-1))),
            "median_mae": float(np.abs(np.median(fct, axis=-1) - obs).mean()),
            "violation_brier": violation_brier(members, obs),
            "violation_recall": violation_recall(members, obs),
            "interval90_coverage": interval90_coverage(members, obs),
        }

    numerics_boundary = (
        "history normalisation (hist_mean, hist_std), the DDIM schedule (alpha_bar) and every sampler "
        "step's arithmetic, the timestep embedding, and the output's de-normalisation (delta_std, last vm)"
    )

    core_units = (
        "encoder",
        "calendar_mlp",
        "denoiser.time_mlp",
        "denoiser.conv_in",
        "denoiser.blocks",
        "denoiser.conv_out",
    )

    def model_info(self, model) -> dict:
        inner = getattr(model, "inner", model)  # a whole-model precision wrapper holds the forecaster
        return {"sampling_steps": len(inner.timesteps)} if hasattr(inner, "timesteps") else {}

    def sampling_steps(self, model: DiffusionForecaster) -> int:
        return len(model.timesteps)

    def with_sampling_steps(self, model: DiffusionForecaster, steps: int) -> DiffusionForecaster:
        """The same weights on a shorter DDIM loop."""
        if steps > len(model.alpha_bar):
            raise Unsupported(f"{steps} steps exceed the {len(model.alpha_bar)} training steps")
        model = copy.deepcopy(model)
        model.timesteps = ddim_timesteps(len(model.alpha_bar), steps)
        return model

    def copy_sampling(self, source: DiffusionForecaster, target: DiffusionForecaster) -> None:
        target.timesteps = source.timesteps

    def halved_student(self, teacher: DiffusionForecaster) -> DiffusionForecaster:
        if len(teacher.timesteps) < 2:
            raise Unsupported("the teacher already samples in one step")
        student = copy.deepcopy(teacher)
        student.timesteps = teacher.timesteps[::2]
        return student

    def prune_structured(self, model: DiffusionForecaster, ratio: float) -> None:
        """The denoiser's inner residual-block channels (with the FiLM rows that modulate them), its
        time-MLP units and the history encoder's channels; the residual stream keeps its width."""
        denoiser = model.denoiser
        shrink_pair(denoiser.time_mlp[0], denoiser.time_mlp[2], ratio)
        for block in denoiser.blocks:
            keep = shrink_pair(block.conv1, block.conv2, ratio)
            hidden = block.film.out_features // 2
            keep_rows(block.film, torch.cat([keep, hidden + keep]))
        enc = model.encoder  # Conv -> SiLU -> Conv(stride 4) -> SiLU -> Conv(stride 4) -> ... -> Linear
        shrink_pair(enc[0], enc[2], ratio)
        shrink_pair(enc[2], enc[4], ratio)

    def example_inputs(self, batch_size: int, seed: int = 0, split: str = "val") -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(seed)
        starts = self._starts(split)
        history, calendar, _ = self._windows(starts[rng.integers(0, len(starts), batch_size)])
        noise = rng.standard_normal((batch_size, history.shape[2], self.config.horizon), dtype=np.float32)
        return history, calendar, noise
