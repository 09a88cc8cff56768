"""What a run ran on: machine, device state, library versions, code version, command line."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from bench.measure.nvml import gpu_info, gpu_state

REPO = Path(__file__).resolve().parents[2]
LIBRARIES = ("torch", "onnxruntime", "onnx", "transformers", "torch-geometric", "zeus", "numpy", "safetensors")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _versions() -> dict[str, str | None]:
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return versions


def capture(device: str, threads: int, meter_why: str) -> dict:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "threads": threads,
        "device": device,
        **(gpu_info() if device == "cuda" else {}),
        "device_state": gpu_state() if device == "cuda" else {},
        "energy_meter": meter_why,
        "libraries": _versions(),
        "git_commit": git_commit(),
        "command_line": " ".join(sys.argv),
        "load_avg": list(os.getloadavg()),
    }
