"""A variant's session under MLPerf LoadGen's scenarios, with joules over LoadGen's performance phase
(issue 26).

- `single-stream`: LoadGen issues one sample, and the next when it is done (metric: p90 latency).
- `server`: Poisson arrivals at `target_qps` (metric: p99 latency against a bound). Requests are
  served as serving systems do: a dynamic batcher takes up to `max_batch` queued requests, waiting at
  most `max_queue_delay_ms` after the first for more (Triton's dynamic batcher:
  `max_queue_delay_microseconds`, `preferred_batch_size`). `target_qps=None` asks LoadGen's
  FindPeakPerformance for the highest rate that meets the bound.

Samples come from the twin's test split through LoadGen's QSL (`QuerySampleLibrary`): the quality
the accuracy pass measured is the quality served. A sample of the served outputs is checked against
the session's own prediction of the same inputs (`outputs_match`).

The energy meter's window opens just before LoadGen starts and closes when it returns; LoadGen's own
`power_begin` / `power_end` (its performance phase) are read from its detail log, and the window
must cover them. J/inference = window energy / samples completed. LoadGen's summary and detail logs
are kept in `log_dir`. A run shorter than LoadGen's minimums is INVALID: that verdict is returned
as it is, never hidden.

mlperf_loadgen (PyPI `mlcommons-loadgen`) is imported inside the functions: `run` works without it
for the offline protocol.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.measure.meters import Meter
from models.errors import Unsupported

CHECKED_SAMPLES = 16  # served outputs compared with the session's own prediction


@dataclass(frozen=True)
class ServerConfig:
    target_qps: float | None  # None: the peak LoadGen finds that meets the bound
    latency_bound_ms: float  # at p99
    max_batch: int = 32
    max_queue_delay_ms: float = 2.0

    def __post_init__(self) -> None:
        if self.target_qps is not None and not self.target_qps > 0:
            raise ValueError(f"target_qps must be > 0, got {self.target_qps}")
        if not self.latency_bound_ms > 0 or self.max_batch < 1 or self.max_queue_delay_ms < 0:
            raise ValueError("latency_bound_ms > 0, max_batch >= 1 and max_queue_delay_ms >= 0 are needed")


@dataclass(frozen=True)
class ScenarioRequest:
    scenario: str  # single-stream | server
    min_duration_s: float
    log_dir: Path
    server: ServerConfig | None = None
    min_query_count: int = 64  # LoadGen's early-stopping floor for single-stream
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scenario not in ("single-stream", "server"):
            raise ValueError(f"LoadGen drives single-stream and server, not {self.scenario!r}")
        if (self.scenario == "server") != (self.server is not None):
            raise ValueError("a server scenario needs its ServerConfig, and only it")


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    target_qps: float | None
    achieved_qps: float | None  # completed samples per second of the performance phase
    completed: int
    latency_ms: dict  # LoadGen's percentiles: {"p50": .., "p90": .., "p99": ..}
    valid: bool  # LoadGen's result_validity
    early_stopping_met: bool | None
    energy_j: float | None  # over the meter's window (None: not measured, never 0)
    energy_source: str
    window_s: float
    phase_s: float | None  # LoadGen's power_begin -> power_end
    outputs_match: bool
    at_peak: bool = False  # target_qps is the peak LoadGen found
    batches: list = field(default_factory=list)  # batch sizes the batcher served (server)
    logs: tuple = ()  # the files LoadGen wrote

    @property
    def j_per_inference(self) -> float | None:
        return self.energy_j / self.completed if self.energy_j is not None and self.completed else None


def _loadgen():
    try:
        import mlperf_loadgen
    except ImportError as e:
        raise Unsupported(f"LoadGen scenarios need mlperf_loadgen (pip install mlcommons-loadgen): {e}") from None
    return mlperf_loadgen


class _Server:
    """The system under test: one worker that serves LoadGen's queries, batched where asked."""

    def __init__(self, lg, predict, inputs: tuple[np.ndarray, ...], max_batch: int, delay_s: float) -> None:
        self.lg, self.predict, self.inputs = lg, predict, inputs
        self.max_batch, self.delay_s = max_batch, delay_s
        self.queue: queue.Queue = queue.Queue()
        self.batches: list[int] = []
        self.served: dict[int, np.ndarray] = {}  # a few outputs, by sample index, to check
        self.error: Exception | None = None  # what the session raised while serving
        self.worker = threading.Thread(target=self._serve, daemon=True)
        self.worker.start()

    def issue(self, samples) -> None:
        for s in samples:
            self.queue.put(s)

    def flush(self) -> None:
        pass

    def stop(self) -> None:
        self.queue.put(None)
        self.worker.join()

    def _take(self) -> list | None:
        first = self.queue.get()
        if first is None:
            return None
        batch, deadline = [first], time.perf_counter() + self.delay_s
        while len(batch) < self.max_batch:
            try:
                item = self.queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if item is None:
                self.queue.put(None)
                break
            batch.append(item)
        return batch

    def _serve(self) -> None:
        while (batch := self._take()) is not None:
            try:
                index = [s.index for s in batch]
                out = self.predict(*(x[index] for x in self.inputs))
                for i, k in enumerate(index):
                    if len(self.served) < CHECKED_SAMPLES and k not in self.served:
                        self.served[k] = np.asarray(out[i])
                self.batches.append(len(batch))
            except Exception as e:  # kept for the caller; the queries still complete, or LoadGen waits forever
                self.error = self.error or e
            self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(s.id, 0, 0) for s in batch])


def _settings(lg, req: ScenarioRequest, expected_latency_s: float, target_qps: float | None):
    s = lg.TestSettings()
    s.min_duration_ms = int(req.min_duration_s * 1000)
    s.min_query_count = req.min_query_count
    s.sample_index_rng_seed = s.schedule_rng_seed = s.qsl_rng_seed = req.seed
    if req.scenario == "single-stream":
        s.scenario, s.mode = lg.TestScenario.SingleStream, lg.TestMode.PerformanceOnly
        s.single_stream_expected_latency_ns = max(int(expected_latency_s * 1e9), 1000)
        return s
    s.scenario = lg.TestScenario.Server
    s.server_target_latency_ns = int(req.server.latency_bound_ms * 1e6)
    s.server_target_latency_percentile = 0.99
    s.server_target_qps = target_qps or 1.0 / max(expected_latency_s, 1e-6)  # the peak search's start
    s.mode = lg.TestMode.PerformanceOnly if target_qps else lg.TestMode.FindPeakPerformance
    return s


def run_scenario(session, inputs: tuple[np.ndarray, ...], req: ScenarioRequest, meter: Meter) -> ScenarioResult:
    """`session` (bench.measure.runtimes.Session) under LoadGen's scenario, metered. A server at its
    peak: LoadGen's peak search first (not metered, its logs in `log_dir/peak-search`), then one
    metered run at the rate it found."""
    lg = _loadgen()
    expected = _expected_latency_s(session, inputs)
    target = req.server.target_qps if req.server else None
    peak = None
    if req.server and target is None:
        search = req.log_dir / "peak-search"
        _start(lg, session, inputs, req, _settings(lg, req, expected, None), search, None)
        peak = find_peak(read_detail_log(search / "mlperf_log_detail.txt"))
        if peak is None:
            raise Unsupported(f"LoadGen's peak search found no rate that meets p99 <= {req.server.latency_bound_ms} ms")
        target = peak
    reading, served = _start(lg, session, inputs, req, _settings(lg, req, expected, target), req.log_dir, meter)
    return _result(req, reading, served, session, inputs, target, peak is not None)


def _expected_latency_s(session, inputs) -> float:
    """What LoadGen is told one sample takes: half the median of 10 warm calls. LoadGen sizes its
    query schedule by it (min duration / expected latency), so a figure too high (a cold first call)
    leaves it short of queries before the minimum duration and the run INVALID; too low only costs
    a longer schedule, which it stops at the minimums."""
    one = tuple(x[:1] for x in inputs)
    session.predict(*one)  # warm-up
    times = []
    for _ in range(10):
        started = time.perf_counter()
        session.predict(*one)
        times.append(time.perf_counter() - started)
    return float(np.median(times)) / 2


def _start(lg, session, inputs, req: ScenarioRequest, settings, log_dir: Path, meter: Meter | None):
    """One LoadGen test; (the meter's reading over it or None, the server that served it)."""
    server = req.server
    batching = (server.max_batch, server.max_queue_delay_ms / 1000) if server else (1, 0.0)
    served = _Server(lg, session.predict, inputs, *batching)
    n = len(inputs[0])
    sut = lg.ConstructSUT(served.issue, served.flush)
    qsl = lg.ConstructQSL(n, n, lambda samples: None, lambda samples: None)  # inputs are in memory already
    log = lg.LogSettings()
    log_dir.mkdir(parents=True, exist_ok=True)
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = False
    key = f"loadgen-{req.scenario}-{time.perf_counter_ns()}"
    reading = None
    try:
        if meter is not None:
            meter.begin(key)
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
        if meter is not None:
            reading = meter.end(key)
    finally:
        served.stop()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    if served.error is not None:
        raise served.error
    return reading, served


def _result(req: ScenarioRequest, reading, served: _Server, session, inputs, target, at_peak: bool) -> ScenarioResult:
    detail = read_detail_log(req.log_dir / "mlperf_log_detail.txt")
    completed = sum(served.batches)  # every sample served in the metered run
    phase = _phase_s(detail)
    qps = detail.get("result_completed_samples_per_sec") or (completed / phase if phase else None)
    check = sorted(served.served)
    expected = session.predict(*(x[check] for x in inputs)) if check else None
    match = expected is None or all(
        np.allclose(served.served[k], expected[i], rtol=1e-4, atol=1e-5) for i, k in enumerate(check)
    )
    percentiles = {
        p: detail.get(f"result_{v}_percentile_latency_ns")
        for p, v in (("p50", "50.00"), ("p90", "90.00"), ("p99", "99.00"))
    }
    return ScenarioResult(
        scenario=req.scenario,
        target_qps=target,
        achieved_qps=float(qps) if qps else None,
        completed=completed,
        latency_ms={p: v / 1e6 for p, v in percentiles.items() if isinstance(v, int | float)},
        valid=detail.get("result_validity") == "VALID",
        early_stopping_met=detail.get("early_stopping_met"),
        energy_j=reading.joules,
        energy_source=reading.source,
        window_s=reading.seconds,
        phase_s=phase,
        outputs_match=bool(match),
        at_peak=at_peak,
        batches=served.batches,
        logs=tuple(str(req.log_dir / f) for f in ("mlperf_log_summary.txt", "mlperf_log_detail.txt")),
    )


_PEAK = re.compile(r"Found peak performance field: ([0-9.]+)")


def find_peak(detail_messages: dict) -> float | None:
    """The rate LoadGen's FindPeakPerformance settled on, from its log."""
    match = _PEAK.search(str(detail_messages.get("generic_message_all", "")))
    return float(match[1]) if match else None


def _phase_s(detail: dict) -> float | None:
    """LoadGen's performance phase, from its power_begin / power_end markers (ms resolution)."""
    from datetime import datetime

    try:
        begin, end = (datetime.strptime(detail[k], "%m-%d-%Y %H:%M:%S.%f") for k in ("power_begin", "power_end"))
    except (KeyError, TypeError, ValueError):
        return None
    return (end - begin).total_seconds() or None


def read_detail_log(path: Path) -> dict:
    """The last value of each key of LoadGen's detail log (one `:::MLLOG {json}` per line)."""
    values = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(":::MLLOG "):
            try:
                entry = json.loads(line[len(":::MLLOG ") :])
            except ValueError:
                continue
            values[entry.get("key")] = entry.get("value")
            if entry.get("key") == "generic_message":  # many: kept together, in order
                values["generic_message_all"] = values.get("generic_message_all", "") + str(entry.get("value")) + "\n"
    return values
