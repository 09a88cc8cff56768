"""sensor-transformer: forecast the grid's deduplicated metering streams 24 steps ahead from 96.

Hugging Face PatchTST built from a config (no hub download), channel-independent patches. Streams
are normalised with training-split statistics; the metric is MAE on that normalised scale, so a
channel in MW and one in Mvar weigh the same.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from models.grid.cache import STEPS_PER_DAY
from models.grid.streams import window_starts
from models.registry import Evaluation, PredictFn, TrainableTwin, batched, register_twin
from models.training import Distillation, FitConfig, fit, teacher_on

PEAK_STEPS = 16  # the daily peak hours of `peak_mae`: 4 h of 15-min steps
RAMP_SHARE = 0.1  # `ramp_mae` scores the 10 % of target values that change most


@dataclass(frozen=True)
class TransformerConfig:
    context: int = 96
    horizon: int = 24
    patch_length: int = 16
    patch_stride: int = 16
    d_model: int = 32
    heads: int = 4
    layers: int = 2
    ffn_dim: int = 64
    dropout: float = 0.1
    # Each epoch draws this many windows at random from every training start: more variety than a
    # fixed strided subset, at a compute cost that fits the smoke budget.
    windows_per_epoch: int = 2048
    fit: FitConfig = FitConfig(lr=2e-3, batch_size=64, max_epochs=15, patience=4, max_seconds=1800)

    def __post_init__(self) -> None:
        if self.context < STEPS_PER_DAY:
            raise ValueError("context must cover a day: the seasonal-naive baseline needs it")
        if self.d_model % self.heads:
            raise ValueError("d_model must be divisible by heads")


class PatchTSTForecaster(torch.nn.Module):
    """past_values (B, context, C) normalised -> forecast (B, horizon, C) normalised.

    PatchTST predicts the correction to the seasonal-naive forecast (the same time yesterday): the
    streams are dominated by daily cycles, and learning the departure from yesterday is easier than
    relearning each cycle. The head starts at zero, so an untrained model is the baseline itself.
    """

    def __init__(self, cfg: TransformerConfig, channels: int) -> None:
        super().__init__()
        from transformers import PatchTSTConfig, PatchTSTForPrediction

        self.naive_start = cfg.context - STEPS_PER_DAY
        self.horizon = cfg.horizon

        self.model = PatchTSTForPrediction(
            PatchTSTConfig(
                num_input_channels=channels,
                context_length=cfg.context,
                prediction_length=cfg.horizon,
                patch_length=cfg.patch_length,
                patch_stride=cfg.patch_stride,
                d_model=cfg.d_model,
                num_attention_heads=cfg.heads,
                num_hidden_layers=cfg.layers,
                ffn_dim=cfg.ffn_dim,
                dropout=cfg.dropout,
                attention_dropout=0.0,
                head_dropout=0.0,
                scaling=None,  # streams are already normalised; a residual must not be re-centred
                # The paper's flatten head: the forecast sees every patch in order. The default mean
                # pooling averages patches away and with them where in the day each one lies.
                pooling_type=None,
            )
        )
        torch.nn.init.zeros_(self.model.head.projection.weight)
        torch.nn.init.zeros_(self.model.head.projection.bias)

    def forward(self, past_values: torch.Tensor) -> torch.Tensor:
        naive = past_values[:, self.naive_start : self.naive_start + self.horizon]
        return naive + self.model(past_values=past_values).prediction_outputs


@register_twin
class SensorTransformer(TrainableTwin):
    name = "sensor-transformer"
    version = 1
    summary = "PatchTST forecasting the next 24 steps (6 h) of every metering stream from the last 96 (24 h)"
    data_files = "streams.npz"
    metric = "mae (normalised test split)"
    baseline = "seasonal naive (same time yesterday)"
    required_baselines = ("seasonal_naive",)
    input_names = ("past_values",)
    output_name = "forecast"
    # The reference's training in seconds, at most (all max_epochs), by (size, device), with where
    # the figure comes from: a run's estimate before anything is trained (bench/run/estimate.py).
    training_seconds = {
        ("smoke", "cpu"): (60.0, "measured: 26 to 60 s for 15 epochs on 2 CPU cores (checkpoint metas)"),
        # Small models on a GPU are bound by kernel launches, syncs and AdamW, not FLOPs (130 GFLOP a
        # step here, a few ms at fp32): ~20 ms a step assumed. Rough: no GPU has trained it yet.
        ("full", "cuda"): (110.0, "rough, no GPU has trained it: 40 epochs x 128 steps x ~20 ms + validation"),
    }

    @classmethod
    def config_for(cls, size: str) -> TransformerConfig:
        if size == "smoke":
            return TransformerConfig()
        return TransformerConfig(
            d_model=128,
            heads=8,
            layers=3,
            ffn_dim=256,
            windows_per_epoch=32768,
            fit=FitConfig(lr=1e-3, batch_size=256, max_epochs=40, patience=5, max_seconds=7200),
        )

    @classmethod
    def scaled_config(cls, config: TransformerConfig, width: float, depth: float) -> TransformerConfig:
        heads = max(1, round(config.heads * width))
        head_dim = config.d_model // config.heads  # kept: heads go, not their size
        return replace(
            config,
            d_model=heads * head_dim,
            heads=heads,
            ffn_dim=max(1, round(config.ffn_dim * width)),
            layers=max(1, round(config.layers * depth)),
        )

    def __init__(self, grid, config: TransformerConfig) -> None:
        super().__init__(grid, config)
        streams, stats = grid.streams, grid.stats
        self.values = ((streams["values"] - stats["streams_mean"]) / stats["streams_std"]).astype(np.float32)
        self.split = streams["split"]

    def build_model(self) -> PatchTSTForecaster:
        torch.manual_seed(self.config.fit.seed)
        return PatchTSTForecaster(self.config, self.values.shape[1]).eval()

    def _windows(self, split: str, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        c, h = self.config.context, self.config.horizon
        starts = window_starts(self.split, self.split_index(split), c + h, stride)
        idx = starts[:, None] + np.arange(c + h)[None]
        windows = self.values[idx]  # (W, c + h, C)
        return windows[:, :c], windows[:, c:]

    def inputs(self, split: str) -> tuple[np.ndarray, ...]:
        return (self._windows(split)[0],)

    def train(
        self, model: PatchTSTForecaster, log, *, fit_cfg: FitConfig | None = None,
        distill: Distillation | None = None, device: str = "cpu",
    ) -> dict:  # fmt: skip
        dev = torch.device(device)
        x_train, y_train = (torch.from_numpy(a).to(dev) for a in self._windows("train"))
        x_val, y_val = (torch.from_numpy(a).to(dev) for a in self._windows("val", 8))
        cfg = fit_cfg or self.config.fit
        model.to(dev)
        distill = teacher_on(distill, dev)

        def epoch(generator):
            picked = torch.randperm(len(x_train), generator=generator)[: self.config.windows_per_epoch]
            return (idx.to(dev) for idx in picked.split(cfg.batch_size))

        # L1: the metric is MAE, and the median forecast is what minimises it.
        def loss_fn(idx):
            pred, x = model(x_train[idx]), x_train[idx]
            if distill is None:
                return torch.nn.functional.l1_loss(pred, y_train[idx])
            return distill.loss(torch.nn.functional.l1_loss, pred, y_train[idx], lambda: distill.teacher(x))

        def val_loss():
            return torch.nn.functional.l1_loss(model(x_val), y_val).item()

        try:
            return fit(model, cfg, epoch, loss_fn, val_loss, log)
        finally:
            model.cpu()

    def evaluate(self, predict_fn: PredictFn, split: str = "test") -> Evaluation:
        x, y = self._windows(split)
        pred = batched(predict_fn, (x,))
        # Seasonal naive: the same time one day earlier, i.e. the first `horizon` steps of the last day.
        start = self.config.context - STEPS_PER_DAY
        naive = x[:, start : start + self.config.horizon]
        events = self._event_inputs(split)
        return Evaluation(
            primary="mae",
            metrics=_errors(pred, y, **events),
            baselines={
                "seasonal_naive": _errors(naive, y, **events),
                "persistence": _errors(x[:, -1:], y, **events),
            },
        )

    def predictions(self, predict_fn: PredictFn, split: str) -> dict[str, np.ndarray]:
        """pred and target, plus what the event metrics need: the last context step of each window,
        the time-of-day slot of every target step and the daily peak slots (see peak_mae, ramp_mae)."""
        return {**super().predictions(predict_fn, split), **self._event_inputs(split)}

    def _event_inputs(self, split: str) -> dict[str, np.ndarray]:
        c, h = self.config.context, self.config.horizon
        # Time of day of every target step: the windows' starts are those `_windows` cuts (stride 1).
        time_of_day = (self.grid.week_step_of_start + self.grid.streams["time_step"]) % STEPS_PER_DAY
        starts = window_starts(self.split, self.split_index(split), c + h)
        train = self.split == self.split_index("train")
        return {
            "last_context": self._windows(split)[0][:, -1],
            "target_slot": time_of_day[starts[:, None] + c + np.arange(h)[None]],
            "peak_slots": daily_peak_slots(self.values[train], time_of_day[train]),
        }

    def targets(self, split: str) -> np.ndarray:
        return self._windows(split)[1]

    numerics_boundary = "the seasonal-naive slice of the input and the addition of the forecast correction to it"

    core_units = ("model",)

    def prune_structured(self, model: PatchTSTForecaster, ratio: float) -> None:
        """Whole attention heads (their size is kept, so attention's scaling stays right) and FFN units,
        with Torch-Pruning, which follows the dependencies between layers."""
        import torch_pruning as tp

        patchtst = model.model
        attentions = [m for m in patchtst.modules() if type(m).__name__ == "PatchTSTAttention"]
        layers = [m for m in patchtst.modules() if type(m).__name__ == "PatchTSTEncoderLayer"]
        heads = {proj: a.num_heads for a in attentions for proj in (a.q_proj, a.k_proj, a.v_proj)}
        # Every layer that writes the residual stream is left alone: d_model keeps its width.
        keep_width = [patchtst.head, patchtst.model.encoder.embedder, *(a.out_proj for a in attentions)]
        keep_width += [layer.ff[-1] for layer in layers]
        example = torch.from_numpy(self.example_inputs(2)[0])
        pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
            ignored_layers=keep_width, num_heads=heads, prune_num_heads=True, prune_head_dims=False,
            head_pruning_ratio=ratio,
            # The positional table lives on the residual stream's axis (-1), which is never pruned.
            unwrapped_parameters=[(patchtst.model.encoder.positional_encoder.position_enc, -1)],
        )  # fmt: skip
        pruner.step()
        for a in attentions:
            a.num_heads = pruner.num_heads[a.q_proj]
            a.embed_dim = a.num_heads * a.head_dim

    def example_inputs(self, batch_size: int, seed: int = 0, split: str = "val") -> tuple[np.ndarray, ...]:
        x = self._windows(split)[0]
        rng = np.random.default_rng(seed)
        return (x[rng.integers(0, len(x), batch_size)],)


def daily_peak_slots(values: np.ndarray, time_of_day: np.ndarray, length: int = PEAK_STEPS) -> np.ndarray:
    """The daily peak hours: the `length` consecutive times of day (15-min slots 0..95, wrapping
    past midnight) whose mean over all streams and rows is highest, in time order.

    values (T, C) normalised streams (the twin passes its training split), time_of_day (T,) the slot
    of each row. The mean profile of all streams is what the grid carries as a whole at that time.
    """
    counts = np.bincount(time_of_day, minlength=STEPS_PER_DAY)
    if len(counts) != STEPS_PER_DAY or not counts.all():
        raise ValueError(f"time_of_day must hold slots 0..{STEPS_PER_DAY - 1} only, with rows at every time of day")
    profile = np.bincount(time_of_day, weights=values.mean(axis=1), minlength=STEPS_PER_DAY) / counts
    wrapped = np.concatenate([profile, profile[: length - 1]])
    first = int(np.argmax(np.convolve(wrapped, np.ones(length), mode="valid")))
    return (first + np.arange(length)) % STEPS_PER_DAY


def peak_mae(pred: np.ndarray, target: np.ndarray, target_slot: np.ndarray, peak_slots: np.ndarray) -> float:
    """MAE over every stream at the target steps whose time of day is one of `peak_slots`.

    pred broadcastable to target (W, H, C); target_slot (W, H) time of day of each target step.
    """
    in_peak = np.isin(target_slot, peak_slots)
    if not in_peak.any():
        raise ValueError("no target step falls in the peak hours")
    err = np.broadcast_to(pred, target.shape)[in_peak].astype(np.float64) - target[in_peak]
    return float(np.abs(err).mean())


def ramp_steps(target: np.ndarray, last_context: np.ndarray, share: float = RAMP_SHARE) -> np.ndarray:
    """(W, H, C) bool: the target values with the largest absolute change from the previous step of
    the same stream (the first horizon step compares with the last context step, last_context (W, C)):
    those whose change is at least the (1 - share) quantile of all changes (numpy's linear
    interpolation; ties at the threshold are all in), i.e. the top `share` of them."""
    change = np.abs(np.diff(np.concatenate([last_context[:, None], target], axis=1), axis=1))
    return change >= np.quantile(change, 1.0 - share)


def ramp_mae(pred: np.ndarray, target: np.ndarray, last_context: np.ndarray, share: float = RAMP_SHARE) -> float:
    """MAE over the target values picked by `ramp_steps`: the forecast error where the streams move most."""
    ramp = ramp_steps(target, last_context, share)
    err = np.broadcast_to(pred, target.shape)[ramp].astype(np.float64) - target[ramp]
    return float(np.abs(err).mean())


def _errors(
    pred: np.ndarray, target: np.ndarray, last_context: np.ndarray, target_slot: np.ndarray, peak_slots: np.ndarray
) -> dict[str, float]:
    err = np.broadcast_to(pred, target.shape) - target
    return {
        "mae": float(np.abs(err).mean()),
        "mse": float((err**2).mean()),
        "peak_mae": peak_mae(pred, target, target_slot, peak_slots),
        "ramp_mae": ramp_mae(pred, target, last_context),
    }
