"""transformer-thermal: the hot-spot temperature of the grid's transformer over the next hour.

A twin that is not twinbench's own. Its dataset comes from the grid cache alone, per 15-minute step
of the sequential power flow (`trajectories.npz`):

- loading K (p.u.): the apparent power the slack node feeds into the grid through its transformer.
  The cache stores the slack's *specified* injection (0: it is the power flow's unknown), so it is
  recomputed from the solved voltages and the admittance matrix, S = V_s conj(Y_s. V). The rating is
  a statistic, not a nameplate (the cache holds none): the transformer is sized so that the training
  split's 99th percentile of |S| is its rated power. K is dimensionless, so one set of weights fits
  any grid; on the smoke grid scenario-2 PV back-feed takes it to 1.15 in summer, 0.45 at most in
  the test weeks (November and December).
- ambient temperature (degC): synthetic, a function of the time step alone (`ambient_c`).
- hot-spot temperature (degC): IEC 60076-7's difference equations (top oil, and the two hot-spot
  gradient terms) with its recommended characteristics for ONAN distribution transformers, solved
  in 1-minute steps with K and the ambient held over each 15-minute step, from steady state.

The task: from the last 32 steps (8 h) of [K, ambient, hot-spot, sin and cos of the time of day],
predict the hot-spot temperature of each of the next 4 steps (1 h). Primary metric: MAE in degC on
the test split; it must beat persistence (the current hot-spot temperature held for the hour).

The model (`ThermalMLP`) is a 3-layer MLP of plain `torch.nn.Linear` layers that predicts the change
from the current hot-spot temperature. Its input scaling is fixed constants, not statistics of a grid
(non-persistent buffers, outside the weights file). It does not train inside twinbench: the twin
ships `weights.safetensors` (made once by ../train_weights.py), so passes that need training are
`unsupported` for it, and structured pruning runs without a recovery fine-tune.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from scipy.signal import lfilter

from models.errors import Unsupported
from models.grid.streams import window_starts
from models.registry import Evaluation, PredictFn, Twin, batched, register_twin
from models.surgery import shrink_pair

STEP_MIN = 15  # minutes per step of the grid data
STEPS_PER_DAY = 24 * 60 // STEP_MIN
FEATURES = ("loading_pu", "ambient_c", "hotspot_c", "tod_sin", "tod_cos")
HOTSPOT = FEATURES.index("hotspot_c")
RATING_QUANTILE = 0.99  # rated power = this quantile of the training split's apparent power

# IEC 60076-7:2018, Table 4, ONAN distribution transformer: top-oil rise at rated losses (K),
# hot-spot-to-top-oil gradient at rated current (K), oil and winding time constants (min), load to
# no-load loss ratio, oil and winding exponents, thermal model constants.
DELTA_OIL_RATED_K = 55.0
DELTA_HOTSPOT_RATED_K = 23.0
TAU_OIL_MIN = 180.0
TAU_WINDING_MIN = 4.0
LOSS_RATIO = 5.0
OIL_EXPONENT = 0.8
WINDING_EXPONENT = 1.6
K11, K21, K22 = 1.0, 1.0, 2.0
DT_MIN = 1.0  # the standard asks for Dt well below the smallest time constant (4 min)


@dataclass(frozen=True)
class ThermalConfig:
    window: int = 32  # past steps the model sees (8 h)
    horizon: int = 4  # future steps it predicts (1 h)
    hidden: int = 64

    def __post_init__(self) -> None:
        if min(self.window, self.horizon, self.hidden) < 1:
            raise ValueError("window, horizon and hidden must be >= 1")


def ambient_c(time_step: np.ndarray, seed: int = 0) -> np.ndarray:
    """Synthetic ambient temperature (degC) at each 15-minute step from 2016-01-01 00:00: a seasonal
    cosine (1 degC mid-January to 19 degC mid-July), a daily one (+-4 degC, warmest at 15:00) and a
    weather anomaly, an AR(1) process with a 2-day correlation time and 3 degC standard deviation."""
    day = np.asarray(time_step, dtype=np.float64) * STEP_MIN / (24 * 60)
    seasonal = 10.0 - 9.0 * np.cos(2 * np.pi * (day - 15.0) / 366.0)
    daily = -4.0 * np.cos(2 * np.pi * (day % 1.0 - 3.0 / 24.0))
    phi = math.exp(-STEP_MIN / (2 * 24 * 60))
    noise = np.random.default_rng(seed).normal(0.0, 3.0 * math.sqrt(1 - phi**2), int(np.max(time_step)) + 1)
    anomaly = lfilter([1.0], [1.0, -phi], noise)[np.asarray(time_step)]
    return (seasonal + daily + anomaly).astype(np.float32)


def _relax(target: np.ndarray, rate: float, start: float) -> np.ndarray:
    """x[n+1] = x[n] + rate * (target[n] - x[n]) from x[0] = start: the form of every IEC 60076-7
    difference equation. Returns x[1:], the state after each step."""
    return lfilter([rate], [1.0, rate - 1.0], target, zi=[(1.0 - rate) * start])[0]


def hotspot_c(loading_pu: np.ndarray, ambient: np.ndarray) -> np.ndarray:
    """Hot-spot temperature (degC) at the end of each 15-minute step, by IEC 60076-7's difference
    equations (Dt = 1 min, K and ambient held over each step, steady state at the start):

        D theta_o  = Dt / (k11 tau_o)        [((1 + K^2 R) / (1 + R))^x dtheta_or - (theta_o - theta_a)]
        D dtheta_h1 = Dt / (k22 tau_w)        [k21 dtheta_hr K^y - dtheta_h1]
        D dtheta_h2 = Dt / ((1 / k22) tau_o)  [(k21 - 1) dtheta_hr K^y - dtheta_h2]
        theta_h = theta_o + dtheta_h1 - dtheta_h2
    """
    sub = int(STEP_MIN / DT_MIN)
    k = np.repeat(np.asarray(loading_pu, np.float64), sub)
    theta_a = np.repeat(np.asarray(ambient, np.float64), sub)
    oil = theta_a + ((1 + k**2 * LOSS_RATIO) / (1 + LOSS_RATIO)) ** OIL_EXPONENT * DELTA_OIL_RATED_K
    gradient = DELTA_HOTSPOT_RATED_K * k**WINDING_EXPONENT
    theta_o = _relax(oil, DT_MIN / (K11 * TAU_OIL_MIN), oil[0])
    h1 = _relax(K21 * gradient, DT_MIN / (K22 * TAU_WINDING_MIN), K21 * gradient[0])
    h2 = _relax((K21 - 1) * gradient, DT_MIN / (TAU_OIL_MIN / K22), (K21 - 1) * gradient[0])
    return (theta_o + h1 - h2)[sub - 1 :: sub].astype(np.float32)


def transformer_power_mva(grid) -> np.ndarray:
    """Apparent power through the slack node (the transformer feeding the grid) at each step, MVA."""
    g, t = grid.graph, grid.trajectories
    slack = int(g["slack_node"])
    y_row = g["ybus_re"][slack] + 1j * g["ybus_im"][slack]
    v = t["vm_pu"] * np.exp(1j * np.radians(t["va_degree"]))
    return np.abs(v[:, slack] * np.conj(v @ y_row)) * float(g["base_mva"])


# Fixed input scaling (not statistics of a grid): per feature, (x - offset) / scale.
OFFSET = (0.5, 10.0, 30.0, 0.0, 0.0)
SCALE = (0.5, 10.0, 15.0, 1.0, 1.0)
DELTA_SCALE_C = 5.0  # the output layer predicts the change from the current hot spot in units of this


class ThermalMLP(torch.nn.Module):
    """history (B, window, 5) [K p.u., ambient degC, hot-spot degC, sin, cos of the time of day]
    -> hot-spot temperature (B, horizon) in degC."""

    def __init__(self, cfg: ThermalConfig) -> None:
        super().__init__()
        n_in = cfg.window * len(FEATURES)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_in, cfg.hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(cfg.hidden, cfg.hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(cfg.hidden, cfg.horizon),
        )
        # Not persistent: constants of the model's code, so the weights file holds only what trained.
        self.register_buffer("offset", torch.tensor(OFFSET), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE), persistent=False)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        x = ((history - self.offset) / self.scale).flatten(1)
        return history[:, -1, HOTSPOT : HOTSPOT + 1] + DELTA_SCALE_C * self.net(x)


@register_twin
class TransformerThermalTwin(Twin):
    name = "transformer-thermal"
    version = 1
    summary = "MLP forecasting the grid transformer's hot-spot temperature 1 h ahead (IEC 60076-7 labels)"
    data_files = "graph.npz + trajectories.npz (loading from the slack node's power flow; ambient synthetic)"
    metric = "mae of the hot-spot temperature over the next 4 steps, degC"
    baseline = "persistence (the current hot-spot temperature)"
    required_baselines = ("persistence",)
    input_names = ("history",)
    output_name = "hotspot_c"

    @classmethod
    def config_for(cls, size: str) -> ThermalConfig:
        # One size: the shipped weights are trained for this architecture ('smoke' and 'full' alike).
        return ThermalConfig()

    def build_model(self) -> ThermalMLP:
        torch.manual_seed(0)
        return ThermalMLP(self.config).eval()

    def shipped_weights(self) -> Path:
        return Path(__file__).with_name("weights.safetensors")

    @cached_property
    def rating_mva(self) -> float:
        power = transformer_power_mva(self.grid)
        return float(np.quantile(power[self.grid.trajectories["split"] == 0], RATING_QUANTILE))

    @cached_property
    def series(self) -> np.ndarray:
        """(T, 5) every step's features, in FEATURES order."""
        t = self.grid.trajectories
        step = np.asarray(t["time_step"])
        loading = (transformer_power_mva(self.grid) / self.rating_mva).astype(np.float32)
        ambient = ambient_c(step)
        tod = 2 * np.pi * (step % STEPS_PER_DAY) / STEPS_PER_DAY
        columns = [loading, ambient, hotspot_c(loading, ambient), np.sin(tod), np.cos(tod)]
        return np.stack(columns, axis=-1).astype(np.float32)

    def _origins(self, split: str) -> np.ndarray:
        """The last history step of each sample: window and horizon lie wholly inside the split."""
        cfg = self.config
        starts = window_starts(self.grid.trajectories["split"], self.split_index(split), cfg.window + cfg.horizon)
        return starts + cfg.window - 1

    def inputs(self, split: str) -> tuple[np.ndarray, ...]:
        origins = self._origins(split)
        return (self.series[origins[:, None] + np.arange(-self.config.window + 1, 1)],)

    def targets(self, split: str) -> np.ndarray:
        ahead = self._origins(split)[:, None] + np.arange(1, self.config.horizon + 1)
        return self.series[ahead, HOTSPOT]

    def example_inputs(self, batch_size: int, seed: int = 0, split: str = "val") -> tuple[np.ndarray, ...]:
        (history,) = self.inputs(split)
        return (history[np.random.default_rng(seed).integers(0, len(history), batch_size)],)

    def evaluate(self, predict_fn: PredictFn, split: str = "test") -> Evaluation:
        (history,) = self.inputs(split)
        target = self.targets(split)
        # Same time yesterday: the hot spot a day before each target step (the split's first day
        # reaches back into the one before it, which is past data, never a target).
        yesterday = self._origins(split)[:, None] + np.arange(1, self.config.horizon + 1) - STEPS_PER_DAY
        baselines = {
            "persistence": _errors(np.repeat(history[:, -1, HOTSPOT : HOTSPOT + 1], self.config.horizon, 1), target),
            "same_time_yesterday": _errors(self.series[np.maximum(yesterday, 0), HOTSPOT], target),
        }
        return Evaluation("hotspot_mae_c", _errors(batched(predict_fn, (history,)), target), baselines)

    def model_info(self, model) -> dict:
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        return {
            "window_steps": self.config.window,
            "horizon_steps": self.config.horizon,
            "linear_shapes": [[m.out_features, m.in_features] for m in linears],
            "rating_mva": round(self.rating_mva, 6),
        }

    def prune_structured(self, model: ThermalMLP, ratio: float) -> None:
        """The hidden units of both hidden layers (the input window and the horizon stay)."""
        linears = [m for m in model.net if type(m) is torch.nn.Linear]
        if len(linears) != 3:
            raise Unsupported("transformer-thermal's layers were rewritten by an earlier pass: prune before it")
        shrink_pair(linears[0], linears[1], ratio)
        shrink_pair(linears[1], linears[2], ratio)


def _errors(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    err = np.asarray(pred, np.float64) - target
    return {
        "hotspot_mae_c": float(np.abs(err).mean()),
        "hotspot_rmse_c": float(np.sqrt((err**2).mean())),
        "hotspot_max_abs_err_c": float(np.abs(err).max()),
        "hotspot_mae_1h_c": float(np.abs(err[:, -1]).mean()),  # the last step of the horizon
    }
