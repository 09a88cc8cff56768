"""Issue 25 item 1: every training and search gets an energy window, kept with what it made (the
checkpoint's meta, the search's outcome); loading never re-measures, and says where it was made."""

import dataclasses
import json
import time

import pytest

from bench.measure.creation import CreationWindows, creation_windows
from bench.measure.meters import EstimateMeter, Meter
from bench.measure.recording import creation_fields
from bench.records import Record
from compress import budget
from models import creation
from models.checkpoint import checkpoint_path, train_or_load
from models.creation import Cost
from models.registry import get_twin


class FakeMeter:
    """A CreationMeter whose windows read the joules it is told, in order."""

    def __init__(self, joules, device="GPU A", source="nvml"):
        self.joules, self.device, self.source, self.opened = list(joules), device, source, 0

    def start(self):
        self.opened += 1
        return self.opened

    def stop(self, token):
        return self.joules.pop(0), self.source, (), None


def test_a_window_keeps_its_cost_in_the_open_ledger():
    with creation.metered_by(FakeMeter([120.0])), creation.ledger() as costs, creation.window("search") as w:
        pass
    assert costs == [w.cost] and w.cost.energy_j == 120.0 and w.cost.source == "nvml" and w.cost.device == "GPU A"


def test_a_build_counts_only_its_own_energy_beyond_the_windows_inside():
    """A build that trains: the training's 300 J are its own cost (kept in its checkpoint); the build
    window read 350 J in all, so the build's own is 50 J, and the ledger sums to 350, never 650."""
    meter = FakeMeter([300.0, 350.0])  # the inner window closes first
    with creation.metered_by(meter), creation.ledger() as costs:
        with creation.window("build", own_only=True):
            with creation.window("distill"):
                pass
    assert [(c.what, c.energy_j) for c in costs] == [("distill", 300.0), ("build", 50.0)]
    assert creation.total(costs)[0] == 350.0


def test_a_build_whose_own_share_is_below_resolution_leaves_the_total_known():
    """The inner training read 300 J and the build 299.5 J in all (the counter's steps): the build's
    own share is below what the counter can tell, left out of the sum, and flagged."""
    with creation.metered_by(FakeMeter([300.0, 299.5])), creation.ledger() as costs:
        with creation.window("build", own_only=True):
            with creation.window("distill"):
                pass
    assert costs[1].energy_j is None and creation.BELOW_RESOLUTION in costs[1].flags
    assert creation.total(costs)[0] == 300.0


def test_without_a_meter_the_energy_is_not_measured_never_zero():
    with creation.ledger() as costs, creation.window("training") as w:
        pass
    assert w.cost.energy_j is None and w.cost.source == "none" and w.cost.seconds >= 0
    assert creation.total(costs) == (None, "none", "")


def test_totals_are_unknown_if_any_part_is_and_name_every_source():
    a = Cost("training", 1000.0, "nvml", 60.0, "GPU A")
    b = Cost("search", 20.0, "estimate", 3.0, "CPU B")
    shipped = Cost("shipped weights", None, "unknown", 0.0, "")
    tiny = Cost("export", None, "nvml", 0.01, "GPU A", flags=(creation.BELOW_RESOLUTION,))
    assert creation.total([a, b, tiny]) == (1020.0, "estimate+nvml", "CPU B, GPU A")
    assert creation.total([a, shipped]) == (None, "nvml+unknown", "GPU A")


def test_a_loaded_cost_is_cached_and_says_it_was_made_elsewhere():
    stored = Cost("training", 5000.0, "nvml", 300.0, "NVIDIA H100 80GB HBM3", epochs=12).as_dict()
    with creation.metered_by(FakeMeter([], device="Intel Xeon")), creation.ledger() as costs:
        cost = creation.loaded(stored, "training")
    assert costs == [cost] and cost.cached and cost.elsewhere and cost.energy_j == 5000.0 and cost.epochs == 12
    old = creation.loaded(None, "training")  # a checkpoint from before costs were kept
    assert old.energy_j is None and "cost_not_recorded" in old.flags
    for bad in ({"what": "x", "energy_j": 0, "source": "nvml", "seconds": 1, "device": "d"}, {"energy_j": "a lot"}, []):
        assert Cost.from_dict(bad) is None  # 0 J is never a measurement; a damaged entry is not known


@pytest.fixture
def short_gnn(smoke_grid, tmp_path, monkeypatch):
    """The GNN on the smoke grid, two epochs, its checkpoint in a private cache."""
    monkeypatch.setenv("TWINBENCH_CACHE", str(tmp_path))
    cls = get_twin("grid-gnn")
    config = cls.config_for("smoke")
    config = dataclasses.replace(config, fit=dataclasses.replace(config.fit, max_epochs=2))
    return cls(smoke_grid, config)


def test_training_is_metered_kept_in_the_meta_and_never_re_measured(short_gnn, tmp_path):
    meter = EstimateMeter(watts_per_core=7.5)
    windows = creation_windows("cpu", meter)
    cpu_before = time.process_time()
    with creation.metered_by(windows), creation.ledger() as made:
        _, meta, trained = train_or_load(short_gnn, root=tmp_path, log=lambda m: None)
    cpu_seconds = time.process_time() - cpu_before
    assert trained and len(made) == 1
    kept = meta["creation"]
    assert kept["what"] == "training" and kept["source"] == "estimate"
    # The estimate is the training's own CPU time x the meter's watts per core: within the CPU time
    # spent around it (building the model and saving the checkpoint are outside its window).
    assert 0.8 * cpu_seconds * 7.5 <= kept["energy_j"] <= cpu_seconds * 7.5
    assert kept["epochs"] == 2 and kept["device"] == windows.device and kept["seconds"] > 0
    assert json.loads(checkpoint_path(short_gnn, tmp_path).with_suffix(".json").read_text())["creation"] == kept
    with creation.metered_by(FakeMeter([], device="another CPU")), creation.ledger() as again:
        train_or_load(short_gnn, root=tmp_path, log=lambda m: None)
    (loaded,) = again
    assert loaded.cached and loaded.elsewhere and loaded.energy_j == kept["energy_j"]  # the cost it was made at


def test_a_search_keeps_its_cost_with_its_outcome(short_gnn, tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "cache_root", lambda: tmp_path / "searches")
    key = ({"pass": "probe"},)

    def search():
        return {"chosen": 3, "trace": []}

    with creation.metered_by(FakeMeter([42.0], device="CPU A")), creation.ledger() as first:
        budget.cached_search(short_gnn, key, search, lambda m: None, lambda c: c == 3)
    with creation.metered_by(FakeMeter([], device="CPU A")), creation.ledger() as second:
        budget.cached_search(short_gnn, key, search, lambda m: None, lambda c: c == 3)
    assert first[0].energy_j == 42.0 and not first[0].cached
    assert second[0].energy_j == 42.0 and second[0].cached and not second[0].elsewhere


class SilentCounter(Meter):
    """A counter (nvml-like) that never moves in a short window."""

    source = "nvml"


def test_a_short_window_on_a_counter_is_below_its_resolution_not_unknown():
    windows = CreationWindows(SilentCounter(), "GPU A")
    token = windows.start()
    assert windows.stop(token) == (None, "none", (creation.BELOW_RESOLUTION,), None)


def test_record_fields_split_own_from_lineage():
    training = Cost("training", 1000.0, "estimate", 60.0, "CPU A")
    distill = Cost("distill", 400.0, "estimate", 20.0, "CPU A")
    build = Cost("build", 5.0, "estimate", 0.5, "CPU A")
    variant = creation_fields([training], [distill, build], is_reference=False)
    assert variant["creation_energy_j"] == 405.0 and variant["creation_energy_total_j"] == 1405.0
    assert variant["creation_energy_source"] == "estimate" and variant["creation_device"] == "CPU A"
    assert [c["what"] for c in variant["creation"]["reference"]] == ["training"]
    reference = creation_fields([training], [], is_reference=True)
    assert reference["creation_energy_j"] == reference["creation_energy_total_j"] == 1000.0
    record = Record(run_id="r", suite="s", twin="t", grid="g", variant_id="v", variant_name="v", **variant)
    assert Record.from_dict(json.loads(record.to_json())) == record  # reads back equal to itself


class SteadyCounter(Meter):
    """A counter reading 50 W, all the time: idle windows and work alike."""

    source = "nvml"

    def _end(self, key):
        return 50.0 * (time.perf_counter() - self._open[key])


def test_on_a_counter_idle_power_is_measured_once_and_the_dynamic_share_kept(monkeypatch):
    monkeypatch.setattr("bench.measure.creation.IDLE_S", 0.2)
    windows = CreationWindows(SteadyCounter(), "GPU A")
    with creation.metered_by(windows), creation.ledger() as costs:
        with creation.window("training"):
            time.sleep(0.3)
    (cost,) = costs
    assert windows.idle_power_w == pytest.approx(50.0, rel=0.05)
    assert cost.idle_power_w == windows.idle_power_w and cost.energy_j == pytest.approx(50 * cost.seconds, rel=0.05)
    assert cost.dynamic_energy_j is None  # nothing above idle: not a figure, never 0
    assert Cost.from_dict(cost.as_dict()) == dataclasses.replace(cost, seconds=cost.seconds)
