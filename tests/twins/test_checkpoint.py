"""Checkpoints are trusted only when their bytes are the ones saved, are made once under a lock
however many processes ask, and hold a model that depends on config, data and seed, not on the clock."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from models import training
from models.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, train_or_load
from models.errors import TwinbenchError
from models.registry import get_twin
from models.training import FitConfig, fit

REPO_ROOT = Path(__file__).resolve().parents[2]


def _gnn(grid, **fit_changes):
    """A grid-gnn twin small enough to train in seconds."""
    cls = get_twin("grid-gnn")
    config = cls.config_for("smoke")
    fit_cfg = dataclasses.replace(config.fit, max_epochs=2, **fit_changes)
    return cls(grid, dataclasses.replace(config, hidden=8, layers=1, fit=fit_cfg))


def _fake_train(calls: list):
    """Stands in for twin.train: moves the weights away from their initial values (so a retrain is
    visible in the hash) without the cost of real training."""

    def train(model, log, device="cpu"):
        calls.append(device)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * len(calls))
        return {"epochs": 1, "stopped": "max_epochs"}

    return train


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def _tensor_data_offset(path: Path) -> int:
    """Where a safetensors file's tensor bytes start: after the 8-byte header length and the header."""
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def _flip_weights(path: Path) -> None:
    data = bytearray(path.read_bytes())
    start = _tensor_data_offset(path)
    assert len(data) - start > 500
    for i in range(start + 50, start + 450):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate_meta(path: Path) -> None:
    meta = path.with_suffix(".json")
    meta.write_text(meta.read_text()[:40])


def _delete_meta(path: Path) -> None:
    path.with_suffix(".json").unlink()


def test_flipped_weight_bytes_are_refused_by_their_hash(smoke_grid, tmp_path):
    twin = _gnn(smoke_grid)
    twin.train = _fake_train([])
    _, meta, _ = train_or_load(twin, root=tmp_path, log=lambda m: None)
    path = checkpoint_path(twin, tmp_path)
    _flip_weights(path)
    with pytest.raises(CheckpointError, match="SHA-256") as caught:
        load_checkpoint(twin, twin.build_model(), path)
    # Names the file and the hash it should have had.
    assert str(path) in str(caught.value) and meta["weights_sha256"] in str(caught.value)


@pytest.mark.parametrize("damage", [_flip_weights, _truncate_meta, _delete_meta])
def test_corrupt_checkpoint_is_reported_and_retrained(smoke_grid, tmp_path, damage):
    twin = _gnn(smoke_grid)
    calls = []
    twin.train = _fake_train(calls)
    train_or_load(twin, root=tmp_path, log=lambda m: None)
    path = checkpoint_path(twin, tmp_path)
    damage(path)
    logs = []
    model, meta, trained = train_or_load(twin, root=tmp_path, log=logs.append)
    assert trained and len(calls) == 2
    assert any(f"checkpoint {path} is corrupt" in m and "retraining" in m for m in logs), logs
    # What was saved again verifies, and is what the returned model holds.
    again = twin.build_model()
    assert load_checkpoint(twin, again, path)["weights_sha256"] == meta["weights_sha256"]
    assert _same_weights(model, again)


# A process asking for a checkpoint. Its stand-in training announces itself, waits for the test's
# go-ahead, and moves the weights by a per-process random amount: had both processes trained,
# their weights would differ.
_WORKER = """
import hashlib, json, os, sys, time, dataclasses
import torch
from models.checkpoint import train_or_load
from models.grid.cache import load_grid
from models.registry import get_twin

root, trainings, release = sys.argv[1:4]
cls = get_twin("grid-gnn")
twin = cls(load_grid("1-LV-rural1--2-sw"), dataclasses.replace(cls.config_for("smoke"), hidden=8, layers=1))

def train(model, log, device="cpu"):
    open(os.path.join(trainings, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
    noise = torch.Generator().manual_seed(os.getpid())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=noise))
    return {"epochs": 1, "stopped": "max_epochs"}

twin.train = train
model, meta, trained = train_or_load(twin, root=__import__("pathlib").Path(root), log=lambda m: print(m, flush=True))
digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values())).hexdigest()
print("RESULT " + json.dumps({"trained": trained, "weights": digest}), flush=True)
"""


def _wait_for(condition, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_processes_train_once_and_end_with_the_same_weights(smoke_grid, tmp_path):
    trainings, release = tmp_path / "trainings", tmp_path / "release"
    trainings.mkdir()
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def start(log: Path) -> subprocess.Popen:
        args = [sys.executable, "-c", _WORKER, str(tmp_path / "root"), str(trainings), str(release)]
        with open(log, "w") as out:
            return subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    first = start(logs[0])
    try:
        _wait_for(lambda: any(trainings.iterdir()) or first.poll() is not None, "the first process to train")
        second = start(logs[1])
        try:
            # The second process either waits on the lock or (without one) starts training too.
            _wait_for(
                lambda: (
                    "waiting for another process" in logs[1].read_text()
                    or len(list(trainings.iterdir())) > 1
                    or second.poll() is not None
                ),
                "the second process to reach the checkpoint",
            )
            release.touch()
            assert second.wait(timeout=120) == 0, logs[1].read_text()
        finally:
            second.kill()
        assert first.wait(timeout=120) == 0, logs[0].read_text()
    finally:
        first.kill()

    results = [json.loads(log.read_text().split("RESULT ")[-1]) for log in logs]
    assert len(list(trainings.iterdir())) == 1, "trained more than once"
    assert [r["trained"] for r in results] == [True, False]
    assert results[0]["weights"] == results[1]["weights"]
    assert "waiting for another process training grid-gnn" in logs[1].read_text()


# fit() on a toy regression: fast enough to run several times.


def _toy_fit(cfg: FitConfig) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(cfg.seed)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]])
    model = torch.nn.Linear(4, 1)

    def batches(generator):
        order = torch.randperm(len(x), generator=generator)
        return [order[i : i + cfg.batch_size] for i in range(0, len(x), cfg.batch_size)]

    loss = lambda idx: torch.nn.functional.mse_loss(model(x[idx]), y[idx])  # noqa: E731
    val = lambda: torch.nn.functional.mse_loss(model(x), y).item()  # noqa: E731
    return model, fit(model, cfg, batches, loss, val, log=lambda m: None)


def test_fit_past_its_time_limit_raises_instead_of_stopping_early():
    cfg = FitConfig(lr=1e-2, batch_size=32, max_epochs=5, patience=5, max_seconds=1e-9)
    with pytest.raises(training.TrainingTimeLimit, match="after 1 of at most 5 epochs.*raise the limit"):
        _toy_fit(cfg)


def test_time_limit_is_not_enforced_once_training_is_done():
    _, summary = _toy_fit(FitConfig(lr=1e-2, batch_size=32, max_epochs=1, patience=1, max_seconds=1e-9))
    assert summary["epochs"] == 1 and summary["stopped"] == "max_epochs"


def test_fit_on_a_slow_machine_gives_the_same_model_or_none(monkeypatch):
    """A clock running 50 s per reading (a loaded machine) must not change the model that comes
    out: either the same weights or, past the limit, an error."""
    cfg = FitConfig(lr=1e-2, batch_size=32, max_epochs=6, patience=6, max_seconds=10_000)
    model, summary = _toy_fit(cfg)
    ticks = iter(range(0, 10**9, 50))
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    slow_model, slow_summary = _toy_fit(cfg)
    assert slow_summary["epochs"] == summary["epochs"] == 6 and slow_summary["stopped"] == "max_epochs"
    assert _same_weights(model, slow_model)
    with pytest.raises(training.TrainingTimeLimit):
        _toy_fit(dataclasses.replace(cfg, max_seconds=120))


def test_twin_past_its_time_limit_names_it_and_saves_nothing(smoke_grid, tmp_path):
    twin = _gnn(smoke_grid, max_seconds=1e-6)
    with pytest.raises(training.TrainingTimeLimit, match="grid-gnn on 1-LV-rural1--2-sw.*max_seconds=1e-06") as e:
        train_or_load(twin, root=tmp_path, log=lambda m: None)
    # A TwinbenchError: the CLI prints the message and exits non-zero, no traceback.
    assert isinstance(e.value, TwinbenchError) and "too slow for this model size" in str(e.value)
    assert not checkpoint_path(twin, tmp_path).exists()


def test_training_is_a_function_of_config_data_and_seed(smoke_grid, tmp_path):
    """Two real trainings of one config in two caches: the same weights, byte for byte, and the
    reason they stopped in the meta."""
    twin = _gnn(smoke_grid)
    metas = [train_or_load(twin, root=tmp_path / str(i), log=lambda m: None)[1] for i in range(2)]
    assert metas[0]["weights_sha256"] == metas[1]["weights_sha256"]
    assert metas[0]["weights_sha256"] == hashlib.sha256(checkpoint_path(twin, tmp_path / "0").read_bytes()).hexdigest()
    assert all(m["summary"]["stopped"] == "max_epochs" and m["summary"]["epochs"] == 2 for m in metas)
    on_disk = json.loads(checkpoint_path(twin, tmp_path / "0").with_suffix(".json").read_text())
    assert on_disk["summary"]["stopped"] == "max_epochs"


def test_the_time_limit_is_not_part_of_the_identity(smoke_grid, tmp_path):
    """Raising the safety limit changes no weight, so it finds the same checkpoint."""
    assert checkpoint_path(_gnn(smoke_grid), tmp_path) == checkpoint_path(_gnn(smoke_grid, max_seconds=99), tmp_path)
