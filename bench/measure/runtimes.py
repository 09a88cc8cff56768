"""Runtimes: how a variant's inference module is executed, registered by name.

A runtime turns a torch module into a `Session`: `predict(*numpy) -> numpy` for the accuracy pass,
and `bind(*numpy)` -> a step function that runs one inference on inputs already staged on the
device (the timed and metered thing). Where a runtime cannot run here it raises `Unsupported`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from models.errors import Unsupported
from models.export import export_onnx
from models.fingerprint import state_bytes
from models.plugins import Registry, Requirements

if TYPE_CHECKING:
    from models.registry import Twin


@dataclass
class Session:
    runtime: str
    device: str
    predict: Callable[..., np.ndarray]  # numpy in, numpy out
    bind: Callable[..., Callable[[], object]]  # stage inputs; returns step() -> device output
    to_numpy: Callable[[object], np.ndarray]
    sync: Callable[[], None]
    threads: int
    artifact_path: str | None = None
    size_bytes: int | None = None
    handle: object = None  # the runtime's own object (torch module, ORT InferenceSession), to drive it bare


@dataclass(frozen=True)
class RuntimeContext:
    device: str  # cpu | cuda
    threads: int
    workdir: Path  # where exported artifacts go
    twin: Twin
    artifact_stem: str = ""  # file name of this variant's exports (default: the twin's name)
    rewrite_onnx: Callable[[Path], Path] = lambda path: path  # the variant's ONNX-level passes


@dataclass(frozen=True)
class Runtime:
    name: str
    open: Callable[[torch.nn.Module, RuntimeContext], Session]  # the variant's model -> a session
    target: str  # which model of a variant it runs: "torch" (the module) or "onnx" (its export)
    requires: Requirements = Requirements()


RUNTIMES: Registry[Runtime] = Registry("runtime", "twinbench.runtimes", expects=Runtime)


ANYWHERE = Requirements()


def register_runtime(name: str, target: str = "torch", requires: Requirements = ANYWHERE):
    """Decorator over `open(model, ctx) -> Session`: a runtime named `name`."""

    def wrap(fn: Callable[[torch.nn.Module, RuntimeContext], Session]):
        RUNTIMES.add(name, Runtime(name, fn, target, requires), code=fn)
        return fn

    return wrap


def runtime_names() -> list[str]:
    return RUNTIMES.names()


def get_runtime(name: str) -> Runtime:
    return RUNTIMES.get(name)


def target_of(cell) -> str:
    """Which model of a cell's variant its runtime runs ("torch" or "onnx")."""
    return get_runtime(cell.runtime).target


def make_session(name: str, model: torch.nn.Module, ctx: RuntimeContext) -> Session:
    runtime = get_runtime(name)
    if reason := runtime.requires.unmet(ctx.device, runtime.target):
        raise Unsupported(f"{name} {reason}")
    return runtime.open(model, ctx)


def _sync_for(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _torch_session(name: str, module, model: torch.nn.Module, ctx: RuntimeContext) -> Session:
    device = torch.device(ctx.device)
    torch.set_num_threads(ctx.threads)

    def stage(*inputs: np.ndarray):
        return tuple(torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in inputs)

    def predict(*inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(*stage(*inputs)).cpu().numpy()

    def bind(*inputs: np.ndarray):
        staged = stage(*inputs)

        def step():
            with torch.inference_mode():
                return module(*staged)

        return step

    size = state_bytes(model)
    return Session(
        name,
        ctx.device,
        predict,
        bind,
        lambda out: out.cpu().numpy(),
        _sync_for(ctx.device),
        ctx.threads,
        None,
        size,
        module,
    )


@register_runtime("torch-eager")
def torch_eager(model: torch.nn.Module, ctx: RuntimeContext) -> Session:
    model = model.to(ctx.device).eval()
    return _torch_session("torch-eager", model, model, ctx)


@register_runtime("torch-compile")
def torch_compile(model: torch.nn.Module, ctx: RuntimeContext) -> Session:
    model = model.to(ctx.device).eval()
    return _torch_session("torch-compile", torch.compile(model, dynamic=False), model, ctx)


@register_runtime("torch-compile-cudagraphs", requires=Requirements(device="cuda", why="CUDA graphs"))
def torch_compile_cudagraphs(model: torch.nn.Module, ctx: RuntimeContext) -> Session:
    model = model.to(ctx.device).eval()
    compiled = torch.compile(model, mode="reduce-overhead", dynamic=False)
    return _torch_session("torch-compile-cudagraphs", compiled, model, ctx)


@register_runtime("onnxruntime", target="onnx", requires=Requirements(libraries=("onnxruntime",)))
def onnxruntime_session(model: torch.nn.Module, ctx: RuntimeContext) -> Session:
    import onnxruntime as ort

    twin = ctx.twin
    exported = ctx.workdir / f"{ctx.artifact_stem or twin.name}.onnx"
    if not exported.exists():  # one export serves every batch size (dynamic batch axis)
        export_onnx(model.cpu().eval(), twin.example_inputs(2), twin.input_names, twin.output_name, exported)
    path = ctx.rewrite_onnx(exported)
    providers = ["CPUExecutionProvider"]
    if ctx.device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise Unsupported("this onnxruntime build has no CUDAExecutionProvider (CPU-only wheel)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = ctx.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # failures surface as exceptions (below), not as log lines
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
        names = [i.name for i in session.get_inputs()]
        # One run: kernels missing for this graph's types (fp16 scatter, bf16 conv on the CPU EP)
        # only show up when a node first executes.
        session.run(None, dict(zip(names, twin.example_inputs(2), strict=True)))
    except Exception as e:  # InvalidGraph, NotImplemented, RuntimeException from the ORT bindings
        if type(e).__module__.startswith("onnxruntime"):
            raise Unsupported(f"ONNX Runtime ({providers[0]}) cannot run this graph: {str(e)[:300]}") from e
        raise

    def predict(*inputs: np.ndarray) -> np.ndarray:
        return session.run(None, dict(zip(names, inputs, strict=True)))[0]

    def bind(*inputs: np.ndarray):
        feed = {n: np.ascontiguousarray(x) for n, x in zip(names, inputs, strict=True)}
        return lambda: session.run(None, feed)[0]

    size = sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*"))  # external data included
    return Session(
        "onnxruntime", ctx.device, predict, bind, np.asarray, lambda: None, ctx.threads, str(path), size, session
    )


def default_threads() -> int:
    return int(os.environ.get("TWINBENCH_THREADS", os.cpu_count() or 1))
