"""Event metrics of the reference twins (voltage-band violations, worst-bus error, interval coverage,
peak-hour and ramp errors): hand-computed on small arrays, and present in every twin's evaluation."""

import math

import numpy as np
import pytest

from models.checkpoint import train_or_load
from models.export import torch_predict_fn
from models.grid.cache import STEPS_PER_DAY
from models.grid.powerflow import outside_band
from models.registry import get_twin
from models.twins.diffusion_forecaster import (
    CALIBRATED_COVERAGE,
    interval90_coverage,
    violation_brier,
    violation_events,
    violation_probability,
    violation_recall,
)
from models.twins.grid_gnn import vm_max_abs_err, vm_violation_detection
from models.twins.sensor_transformer import daily_peak_slots, peak_mae, ramp_mae, ramp_steps

# --- grid-gnn: per (snapshot, bus) ---------------------------------------------------------------

# 2 snapshots x 3 buses; true violations: 1.06, 0.94 and 1.10.
VM = np.array([[1.00, 1.04, 1.06], [0.94, 0.96, 1.10]])


def test_band_edges_are_inside():
    assert outside_band(np.array([0.95, 1.05, 0.9499, 1.0501, 1.0])).tolist() == [False, False, True, True, False]


def test_exact_vm_prediction():
    assert vm_max_abs_err(VM, VM) == 0.0
    assert vm_violation_detection(VM, VM) == (1.0, 1.0)


def test_vm_offset_by_002():
    # +0.02: 1.04 -> 1.06 invented, 1.06 -> 1.08 and 1.10 -> 1.12 caught, 0.94 -> 0.96 missed.
    pred = VM + 0.02
    assert vm_max_abs_err(pred, VM) == pytest.approx(0.02, abs=1e-12)
    recall, precision = vm_violation_detection(pred, VM)
    assert recall == pytest.approx(2 / 3) and precision == pytest.approx(2 / 3)


def test_vm_never_predicting_a_violation():
    flat = np.ones_like(VM)
    assert vm_max_abs_err(flat, VM) == pytest.approx(0.10)
    assert vm_violation_detection(flat, VM) == (0.0, 0.0)  # missed everything: not precise either
    calm = np.full_like(VM, 1.01)
    assert vm_violation_detection(flat, calm) == (1.0, 1.0)  # nothing to miss, no false alarm
    assert vm_violation_detection(VM, calm) == (1.0, 0.0)  # nothing to miss, only false alarms


def test_grid_gnn_scores_non_slack_buses_only(smoke_grid):
    cls = get_twin("grid-gnn")
    twin = cls(smoke_grid, cls.config_for("smoke"))
    slack = int(smoke_grid.graph["slack_node"])
    n = len(smoke_grid.graph["bus_ids"])
    target = np.stack([np.full((4, n), 1.02), np.zeros((4, n))], axis=-1)
    target[:, (slack + 1) % n, 0] = 1.07  # one true violation per snapshot, caught exactly
    pred = target.copy()
    pred[:, slack, 0] = 0.5  # a wild error and "violation" at the slack counts for nothing
    m = twin._errors(pred, target)
    assert m["vm_max_abs_err"] == 0.0
    assert m["vm_violation_recall"] == 1.0 and m["vm_violation_precision"] == 1.0


# --- diffusion-forecaster: per (window, bus), a trajectory over the horizon ----------------------

# (W=2, H=3, N=2): events at (window 0, bus 0) above and (window 1, bus 0) below the band.
TRAJ = np.array(
    [
        [[1.00, 1.00], [1.04, 1.01], [1.06, 1.02]],
        [[0.96, 1.02], [0.94, 1.035], [1.00, 1.04]],
    ]
)
SPREAD = np.linspace(-0.005, 0.005, 11)  # 11 members around a trajectory, none crossing the band


def members(centre: np.ndarray, offsets: np.ndarray = SPREAD) -> np.ndarray:
    """(W, H, N) -> (W, M, H, N): the centre trajectory shifted by each offset."""
    return centre[:, None] + offsets[None, :, None, None]


def test_violation_events_of_the_target():
    assert violation_events(TRAJ).tolist() == [[True, False], [True, False]]


def test_exact_samples_spread_around_the_truth():
    samples = members(TRAJ)
    assert violation_probability(samples).tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert violation_brier(samples, TRAJ) == 0.0
    assert violation_recall(samples, TRAJ) == 1.0
    assert interval90_coverage(samples, TRAJ) == 1.0
    assert interval90_coverage(TRAJ[:, None], TRAJ) == 1.0  # one exact member: edges are inside


def test_samples_offset_by_002():
    # +0.02: (0, 0) still leaves (p = 1, event), (0, 1) stays in (p = 0, none), (1, 0) now stays in
    # (p = 0, event: missed), (1, 1) now leaves (p = 1, none: invented). Nothing inside +-0.004.
    samples = members(TRAJ + 0.02)
    assert violation_probability(samples).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert violation_brier(samples, TRAJ) == pytest.approx((0 + 0 + 1 + 1) / 4)
    assert violation_recall(samples, TRAJ) == 0.5
    assert interval90_coverage(samples, TRAJ) == 0.0


def test_samples_never_leaving_the_band():
    samples = np.ones((2, 4, 3, 2))
    assert violation_brier(samples, TRAJ) == pytest.approx(2 / 4)  # (0 - 1)^2 on the two events
    assert violation_recall(samples, TRAJ) == 0.0
    calm = np.full_like(TRAJ, 1.01)
    assert violation_brier(samples, calm) == 0.0
    assert violation_recall(samples, calm) == 1.0  # nothing to miss


def test_violation_probability_is_the_share_of_samples():
    # One window, two buses, 4 members: 3 of 4 leave at bus 0 (an event), 1 of 4 at bus 1 (none).
    target = np.array([[[1.06, 1.00]]])
    samples = np.array([[1.07, 1.00], [1.06, 1.00], [1.08, 1.04], [1.00, 1.06]])[None, :, None, :]
    assert violation_probability(samples).tolist() == [[0.75, 0.25]]
    assert violation_brier(samples, target) == pytest.approx(((0.75 - 1) ** 2 + 0.25**2) / 2)
    assert violation_recall(samples, target) == 1.0
    half = np.array([[1.07, 1.00], [1.06, 1.00], [1.00, 1.00], [1.00, 1.00]])[None, :, None, :]
    assert violation_recall(half, target) == 1.0  # p = 0.5 is flagged: at least half the samples
    assert violation_recall(half[:, 1:], target) == 0.0  # p = 1/3 is not


@pytest.mark.parametrize("m", sorted(CALIBRATED_COVERAGE))
def test_a_calibrated_ensemble_covers_what_the_docstring_says(m):
    """The 5-95 % sample quantiles of a finite ensemble cover less than 90 %: the stated calibrated
    coverage per ensemble size is what an ensemble drawn from the target's own distribution gets."""
    rng = np.random.default_rng(0)
    samples, target = rng.standard_normal((50_000, m, 1, 1)), rng.standard_normal((50_000, 1, 1))
    assert interval90_coverage(samples, target) == pytest.approx(CALIBRATED_COVERAGE[m], abs=0.005)
    assert interval90_coverage(0.6 * samples, target) < CALIBRATED_COVERAGE[m] - 0.1  # under-dispersed


def test_interval90_coverage_uses_linear_quantiles_with_edges_inside():
    # 5 members 0..4: the 5 % and 95 % quantiles are 0.2 and 3.8.
    samples = np.broadcast_to(np.arange(5.0)[None, :, None, None], (1, 5, 5, 1))
    target = np.array([0.1, 0.2, 2.0, 3.8, 3.9])[None, :, None]
    assert interval90_coverage(samples, target) == pytest.approx(3 / 5)


# --- sensor-transformer: normalised streams (W, H, C) ---------------------------------------------


def test_daily_peak_slots_is_the_highest_4_hours():
    slots = np.tile(np.arange(STEPS_PER_DAY), 3)
    values = np.zeros((len(slots), 2))
    values[(slots >= 70) & (slots < 86), 0] = 2.0  # stream 0 peaks 17:30-21:30
    values[slots == 69, 1] = 1.0  # a smaller bump just before: outside the best 16 slots
    assert daily_peak_slots(values, slots).tolist() == list(range(70, 86))
    values = np.zeros((len(slots), 1))
    values[(slots >= 88) | (slots < 8), 0] = 1.0  # 22:00-02:00: the window wraps past midnight
    assert daily_peak_slots(values, slots).tolist() == [*range(88, 96), *range(8)]


def test_daily_peak_slots_needs_every_time_of_day():
    with pytest.raises(ValueError, match="rows at every time of day"):
        daily_peak_slots(np.zeros((10, 1)), np.arange(10))


# W=1, H=4, C=2; the 2nd and 3rd target steps fall in the peak slots 70 and 71.
PEAK_TARGET = np.array([[[0.0, 1.0], [2.0, -1.0], [0.5, 0.5], [3.0, 3.0]]])
PEAK_SLOT = np.array([[10, 70, 71, 90]])
PEAK = np.arange(70, 86)


def test_peak_mae():
    assert peak_mae(PEAK_TARGET, PEAK_TARGET, PEAK_SLOT, PEAK) == 0.0
    assert peak_mae(PEAK_TARGET + 0.3, PEAK_TARGET, PEAK_SLOT, PEAK) == pytest.approx(0.3)
    err = np.array([[[9.0, 9.0], [1.0, -3.0], [2.0, 2.0], [9.0, 9.0]]])  # 9: off-peak, not counted
    assert peak_mae(PEAK_TARGET + err, PEAK_TARGET, PEAK_SLOT, PEAK) == pytest.approx((1 + 3 + 2 + 2) / 4)
    with pytest.raises(ValueError, match="peak hours"):
        peak_mae(PEAK_TARGET, PEAK_TARGET, np.zeros((1, 4), int), PEAK)


# W=1, H=10, C=2. Changes from the previous step: stream 0 moves 5 (from the last context step -5
# to 0) and 3 (step 3); stream 1 moves 1 (last step). The 90 % quantile of the 20 changes is
# 1 + 0.1 * (3 - 1) = 1.2, so the ramps are exactly the two of stream 0: 10 % of the values.
RAMP_LAST = np.array([[-5.0, 0.0]])
RAMP_TARGET = np.stack([[0, 0, 0, 3, 3, 3, 3, 3, 3, 3], [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]], axis=-1)[None].astype(float)


def test_ramp_steps_are_the_largest_changes():
    ramp = ramp_steps(RAMP_TARGET, RAMP_LAST)
    assert sorted(zip(*np.nonzero(ramp[0]), strict=True)) == [(0, 0), (3, 0)]


def test_ramp_mae():
    assert ramp_mae(RAMP_TARGET, RAMP_TARGET, RAMP_LAST) == 0.0
    assert ramp_mae(RAMP_TARGET + 0.02, RAMP_TARGET, RAMP_LAST) == pytest.approx(0.02)
    err = np.full_like(RAMP_TARGET, 9.0)  # 9: not a ramp, not counted
    err[0, 0, 0], err[0, 3, 0] = 0.5, -1.5
    assert ramp_mae(RAMP_TARGET + err, RAMP_TARGET, RAMP_LAST) == pytest.approx(1.0)
    # Persistence (the last context value held, shape (W, 1, C)) misses both ramps in full: |-5 - 0|, |-5 - 3|.
    assert ramp_mae(RAMP_LAST[:, None], RAMP_TARGET, RAMP_LAST) == pytest.approx((5 + 8) / 2)


# --- every twin's evaluation carries them ---------------------------------------------------------

EVENT_METRICS = {
    "grid-gnn": ("vm_max_abs_err", "vm_violation_recall", "vm_violation_precision"),
    "diffusion-forecaster": ("violation_brier", "violation_recall", "interval90_coverage"),
    "sensor-transformer": ("peak_mae", "ramp_mae"),
}
IN_UNIT_INTERVAL = {
    "vm_violation_recall", "vm_violation_precision", "violation_brier", "violation_recall", "interval90_coverage",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EVENT_METRICS))
def test_evaluate_reports_event_metrics(smoke_grid, name):
    cls = get_twin(name)
    twin = cls(smoke_grid, cls.config_for("smoke"))
    model, _, _ = train_or_load(twin, log=lambda m: None)  # the cached checkpoint
    evaluation = twin.evaluate(torch_predict_fn(model), "test")
    for scored, metrics in {"model": evaluation.metrics, **evaluation.baselines}.items():
        print(f"{name} {scored}: " + ", ".join(f"{k}={metrics[k]:.4g}" for k in EVENT_METRICS[name]))
        for key in EVENT_METRICS[name]:
            assert math.isfinite(metrics[key]), (scored, key)
            assert metrics[key] >= 0.0
            if key in IN_UNIT_INTERVAL:
                assert metrics[key] <= 1.0, (scored, key)
    assert evaluation.primary in evaluation.metrics


def test_predict_output_recomputes_the_sensor_event_metrics(smoke_grid):
    """`twinbench predict` writes what the event metrics need: anyone can recompute them."""
    from models.checkpoint import train_or_load
    from models.export import torch_predict_fn
    from models.registry import get_twin
    from models.twins.sensor_transformer import peak_mae, ramp_mae

    cls = get_twin("sensor-transformer")
    twin = cls(smoke_grid, cls.config_for("smoke"))
    model, _, _ = train_or_load(twin)
    arrays = twin.predictions(torch_predict_fn(model), "test")
    metrics = twin.evaluate(torch_predict_fn(model), "test").metrics
    assert (
        peak_mae(arrays["pred"], arrays["target"], arrays["target_slot"], arrays["peak_slots"]) == metrics["peak_mae"]
    )
    assert ramp_mae(arrays["pred"], arrays["target"], arrays["last_context"]) == metrics["ramp_mae"]
