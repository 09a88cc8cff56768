"""Make twinbench_thermal/weights.safetensors: the transformer-thermal twin's shipped weights.

The twin does not train inside twinbench (it is not a `TrainableTwin`); its weights are made once by
this script and committed as package data. How the committed file was made, from the repository
root, with the smoke grid's cache built (`twinbench data --suite smoke`):

    .venv/bin/python tests/plugin_example/train_weights.py

Data: the smoke suite's grid (1-LV-rural1--2-sw), every training-split sample (26,317 windows).
Training: Adam (lr 2e-3, weight decay 1e-5), MSE on the change from the current hot-spot
temperature, batch 256, at most 40 epochs, early stopping on the validation MAE (patience 6), seed 0,
one CPU thread, torch 2.13 CPU; the best epoch's weights are saved (safetensors, float32). It prints
the test MAE against persistence. The model's inputs are dimensionless loading and degrees Celsius,
and its scaling is fixed constants, so the same file loads on any grid.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the package, without installing it

from twinbench_thermal.thermal import DELTA_SCALE_C, HOTSPOT, TransformerThermalTwin  # noqa: E402

from models.export import torch_predict_fn  # noqa: E402
from models.grid.cache import load_grid  # noqa: E402

GRID = "1-LV-rural1--2-sw"
OUT = Path(__file__).resolve().parent / "twinbench_thermal" / "weights.safetensors"


def main() -> None:
    torch.set_num_threads(1)
    twin = TransformerThermalTwin(load_grid(GRID), TransformerThermalTwin.config_for("smoke"))
    model = twin.build_model().train()
    (x,) = twin.inputs("train")
    x = torch.from_numpy(x)
    # The network's own target: the change from the current hot spot, in DELTA_SCALE_C units.
    y = (torch.from_numpy(twin.targets("train")) - x[:, -1, HOTSPOT : HOTSPOT + 1]) / DELTA_SCALE_C
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-5)
    generator = torch.Generator().manual_seed(0)
    best, best_state, stale, start = float("inf"), None, 0, time.perf_counter()
    for epoch in range(40):
        model.train()
        for idx in torch.randperm(len(x), generator=generator).split(256):
            pred = model.net(((x[idx] - model.offset) / model.scale).flatten(1))
            loss = torch.nn.functional.mse_loss(pred, y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        val = twin.evaluate(torch_predict_fn(model), "val").value
        print(f"epoch {epoch + 1}: val MAE {val:.4f} degC")
        if val < best - 1e-5:
            best, stale = val, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= 6:
                break
    model.load_state_dict(best_state)
    model.eval()
    test = twin.evaluate(torch_predict_fn(model), "test")
    print(f"trained in {time.perf_counter() - start:.0f} s; best val MAE {best:.4f} degC")
    for name, scores in test.baselines.items():
        print(f"test MAE {test.value:.4f} degC vs {name} {scores[test.primary]:.4f} ({test.margin_pct(name):+.1f} %)")
    safetensors.torch.save_model(model, str(OUT))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {sum(p.numel() for p in model.parameters())} parameters)")
    assert np.isfinite(test.value) and test.margin_pct("persistence") > 0, "does not beat persistence"


if __name__ == "__main__":
    main()
