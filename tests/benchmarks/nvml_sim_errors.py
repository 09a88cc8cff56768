"""The simulated H100's error table: how far the protocol's recorded energy lies from the truth for
windows of 0.2 s, 1 s and 5 s, under a steady and a bursty load (tests/nvml_sim.py), with the
counter integrating all the time and, as a second case, only the power reading's 25 ms slices.

    .venv/bin/python tests/benchmarks/nvml_sim_errors.py [--repetitions 5] [--windows 0.2 1 5]

Prints, per case, the median and worst absolute relative error over windows (the counter's joules
vs what the GPU drew for the window's work), their signed median (the bias), the signed error of
the cell's recorded figure (median over windows), and the cross-check's figure. Not a timed test:
it takes a few minutes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.nvml_sim import SimulatedGPU, load_twin, measure_on_simulator  # noqa: E402

LOADS = {1: "steady", 2: "bursty"}  # batch size -> load


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--windows", type=float, nargs="+", default=[0.2, 1.0, 5.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    twin, model = load_twin()
    rows = []
    for part_time in (False, True):
        for window_s in args.windows:
            gpu = SimulatedGPU(counter_part_time=part_time)
            with tempfile.TemporaryDirectory() as tmp:
                run = measure_on_simulator(
                    gpu,
                    twin,
                    model,
                    Path(tmp),
                    window_s=window_s,
                    batch_sizes=tuple(LOADS),
                    loads=LOADS,
                    repetitions=args.repetitions,
                )
            for bs, load in LOADS.items():
                r = run.record(bs)
                signed = [e for e in run.window_errors(r) if np.isfinite(e)]
                errs = [abs(e) for e in signed]
                missing = sum(w.reading.joules is None for w in run.windows_of(r))
                total, _ = run.truth(r)
                cell = r.energy_j_per_inference / total - 1 if r.energy_j_per_inference else float("nan")
                nan = float("nan")
                rows.append(
                    (
                        part_time,
                        window_s,
                        load,
                        np.median(errs) if errs else nan,
                        max(errs) if errs else nan,
                        np.median(signed) if signed else nan,
                        cell,
                        r.energy_crosscheck_pct,
                        missing,
                        float(np.median([w.reading.seconds for w in run.windows_of(r)])),
                    )
                )
                print(rows[-1], flush=True)
    print()
    print(
        "| counter | window | load | median error | worst | bias | recorded (median) | cross-check | "
        "windows at 0 J | measured s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for part_time, window_s, load, med, worst, bias, cell, xc, missing, seconds in rows:
        counter = "part-time" if part_time else "full-time"
        print(
            f"| {counter} | {window_s:g} s | {load} | {100 * med:.2f} % | {100 * worst:.2f} % | {100 * bias:+.2f} % "
            f"| {100 * cell:+.2f} % | {'-' if xc is None else f'{xc:+.1f} %'} | {missing} | {seconds:.2f} |"
        )


if __name__ == "__main__":
    main()
