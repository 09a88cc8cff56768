"""Progress of a run for the command line: a live bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time


class RunProgress:
    """Progress of a run: a live bar on a terminal; elsewhere (a pipe, `| tee log`, CI) one line per
    step with the cells done, elapsed time and an ETA from the rate so far."""

    def __init__(self, console) -> None:
        self.console = console
        self.bar = None

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self.bar = Progress(*columns, console=self.console, transient=True).__enter__()
            self.task = self.bar.add_task("cells", total=None)
        self.started, self.first_done, self.last_line, self.last_done = time.monotonic(), None, 0.0, None
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total, description=what[-70:])
            return
        now = time.monotonic()
        if self.first_done is None:
            self.first_done = (done, now)  # cells already done when this process started (resume)
        if now - self.last_line < 2.0 and done == self.last_done:
            return  # a line every few seconds at most, and one whenever cells finish
        self.last_line, self.last_done = now, done
        d0, t0 = self.first_done
        eta = "?"
        if done > d0:
            eta = f"{(now - t0) / (done - d0) * (total - done) / 60:.1f} min"
        print(f"[{done}/{total}] {now - self.started:.0f} s elapsed, eta {eta}: {what}", file=sys.stderr, flush=True)
