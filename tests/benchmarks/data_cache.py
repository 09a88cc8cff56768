"""Prints the smoke cache's cold build time, warm load time and size (targets: <= 60 s, <= 1 s).

Run with `make bench-data`. A benchmark that prints numbers, not a timed test: timings on a shared
2-core machine swing too much for an assertion.
"""

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from models.grid.cache import load_grid  # noqa: E402

GRID = "1-LV-rural1--2-sw"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # Cold: a fresh process (imports of simbench/pandapower included), an empty cache.
        code = f"from pathlib import Path; from models.grid.build import ensure_grid; ensure_grid({GRID!r}, Path({tmp!r}), log=lambda m: None)"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
        cold_s = time.perf_counter() - start

        loads = []
        for _ in range(5):
            start = time.perf_counter()
            data = load_grid(GRID, root)
            loads.append(time.perf_counter() - start)
        code = f"from pathlib import Path; from models.grid.cache import load_grid; load_grid({GRID!r}, Path({tmp!r}))"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
        fresh_process_s = time.perf_counter() - start

        size = sum(p.stat().st_size for p in data.path.iterdir())
        print(f"grid {GRID}: {data.n_nodes} nodes, {len(data.trajectories['time_step'])} steps")
        print(f"cold build (fresh process, empty cache): {cold_s:6.2f} s   (target <= 60 s)")
        print(f"warm load, in process (median of 5):     {statistics.median(loads):6.3f} s   (target <= 1 s)")
        print(f"warm load, fresh process incl. imports:  {fresh_process_s:6.3f} s")
        print(
            f"cache size:                              {size / 1e6:6.1f} MB in {len(list(data.path.iterdir()))} files"
        )


if __name__ == "__main__":
    main()
