"""Quantization passes, on the twin's core only (its numerics boundary stays fp32).

Only the compute-heavy ops are quantised (MatMul, Gemm, Conv: ORT's `op_types_to_quantize`): with
ORT's default list, the GNN's message aggregation and residual adds were quantised too, and no choice
of layers brought its static int8 below +14 % vm RMSE. On ONNX Runtime, the boundary's nodes go to
the quantizer's `nodes_to_exclude`: quantising the GNN's
output de-normalisation (+ out_mean, ~1.0 p.u.) to int8 cost it +33,694 % vm RMSE. With
`max_quality_loss_pct`, the core's layers whose int8 costs most are excluded too, ranked by measured
sensitivity on the validation split until the budget holds (`budget.keep_fp32`, after NNCF's
`quantize_with_accuracy_control`; ORT's `nodes_to_exclude` is the mechanism).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compress.base import Pass, PassContext, check_budget, register_pass
from compress.boundary import (
    QUANTIZABLE_OPS,
    boundary_note,
    declared_units,
    onnx_core,
    replace_module,
    torch_units,
)
from compress.budget import Search, cached_search, keep_fp32, kept_subset_of
from models.errors import Unsupported
from models.export import ort_predict_fn, torch_predict_fn
from models.plugins import Requirements

# Which int8 kernels a torch runtime gets. "x86": torch's own dynamic quantisation of Linear layers
# (fbgemm/oneDNN int8 GEMMs, what a practitioner uses on a CPU); "torchao": torchao's int8
# dynamic-activation config, built for compiled GPU kernels (on CPU eager it made the smoke GNN 5.4x
# more expensive at batch 32 and 17x at batch 1). "auto": torchao on CUDA, x86 elsewhere.
TORCH_BACKENDS = ("auto", "x86", "torchao")


@register_pass
@dataclass(frozen=True)
class QuantDynamicInt8(Pass):
    """Dynamic int8: int8 weights, activations quantized on the fly per batch, on the core only.

    On ONNX Runtime: `onnxruntime.quantization.quantize_dynamic` (MatMul/Gemm and, per ORT's
    defaults, other supported ops), the boundary's nodes excluded. On torch runtimes: the `backend`'s
    int8 Linear kernels in every core unit.
    """

    name = "quant-dynamic-int8"
    backend: str = "auto"
    max_quality_loss_pct: float | None = None
    requires = Requirements(target_libraries=(("torch", "torchao"), ("onnx", "onnxruntime")))

    def __post_init__(self) -> None:
        if self.backend not in TORCH_BACKENDS:
            raise ValueError(f"backend must be one of {list(TORCH_BACKENDS)}, got {self.backend!r}")
        check_budget(self.max_quality_loss_pct)

    def torch_backend(self, device: str) -> str:
        if self.backend != "auto":
            return self.backend
        return "torchao" if device == "cuda" else "x86"

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        if ctx.target == "onnx":  # exported in fp32; ORT's quantizer rewrites the graph (apply_onnx)
            return model
        twin, backend = ctx.twin, self.torch_backend(ctx.device)
        units = torch_units(twin, model)
        kept, search = (), None
        if self.max_quality_loss_pct is not None:
            key = ctx.search_key(self, target=ctx.target, torch_backend=backend)

            def run() -> dict:
                s = Search(twin, self.name, self.max_quality_loss_pct, torch_predict_fn(copy.deepcopy(model)), ctx.log)
                return keep_fp32(
                    s, units, lambda k: torch_predict_fn(_int8_units(model, [u for u in units if u not in k], backend))
                )

            search = cached_search(twin, key, run, ctx.log, kept_subset_of(units))
            kept = tuple(search["chosen"]["kept_fp32"])
        changed = [u for u in units if u not in kept]
        ctx.note(self, torch_backend=backend, **boundary_note(twin, changed, kept), **_search_note(search))
        return _int8_units(model, changed, backend)

    def apply_onnx(self, path: Path, ctx: PassContext) -> Path:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        def quantize(src: str, out: str, exclude: list[str]) -> None:
            quantize_dynamic(
                src,
                out,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
                op_types_to_quantize=sorted(QUANTIZABLE_OPS),
            )

        return quantize_onnx(self, path, ctx, ".int8.onnx", "quantize_dynamic", quantize)


def _int8_units(model: torch.nn.Module, units: list[str], backend: str) -> torch.nn.Module:
    """A copy of `model` with the Linear layers of `units` in dynamic int8 on `backend`'s kernels."""
    model = copy.deepcopy(model).eval()
    for name in units:
        unit = model.get_submodule(name) if name else model
        if backend == "torchao":
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

            quantize_(unit, Int8DynamicActivationInt8WeightConfig())
        else:
            with warnings.catch_warnings():  # torch.ao's notice that its eager API moves to torchao
                warnings.simplefilter("ignore")
                unit = torch.ao.quantization.quantize_dynamic(unit, {torch.nn.Linear}, dtype=torch.qint8)
            model = replace_module(model, name, unit)
    return model


def _search_note(search: dict | None) -> dict:
    return {"search": search} if search else {}


@contextlib.contextmanager
def _quiet_quantizer():
    """ORT's quantizers log every tensor they skip on the root logger (hundreds of lines); what
    matters reaches the caller as an exception or as the quantized model's measured quality."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print their progress
            yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _preprocessed(path: Path, what: str) -> Iterator[Path]:
    """The exported graph after ORT's recommended preprocessing (symbolic shape inference, graph
    cleanup): the dynamo exporter's recorded shapes otherwise contradict the quantizer's inference."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = path.with_name(path.stem + ".preprocessed.onnx")
    try:
        with _quiet_quantizer():
            quant_pre_process(str(path), str(prepared))
        yield prepared
    except Exception as e:
        if isinstance(e, Unsupported):
            raise
        raise Unsupported(f"onnxruntime {what} cannot prepare this graph: {str(e)[:200]}") from e
    finally:
        prepared.unlink(missing_ok=True)


def quantize_onnx(
    p: Pass, path: Path, ctx: PassContext, suffix: str, what: str, quantize: Callable[[str, str, list[str]], None]
) -> Path:
    """`quantize(preprocessed, out, nodes_to_exclude)` over an exported graph -> the quantized graph
    beside it, the boundary's nodes excluded (and, with a budget, the core layers its search keeps
    in fp32). One quantized graph serves every batch size; a graph the quantizer cannot type or
    rewrite is `Unsupported`."""
    twin = ctx.twin
    out = path.with_name(path.stem + suffix)
    with _preprocessed(path, what) as prepared:
        boundary, groups, ends = onnx_core(prepared, path, declared_units(twin))
        fixed = frozenset(ends) if getattr(p, "keep_first_last", False) else frozenset()
        if fixed and fixed.issuperset(groups):
            raise Unsupported(
                f"the core has {len(groups)} compute layer(s) and keep_first_last keeps the first and the last "
                "in fp32: nothing is left to quantise (set keep_first_last = false)"
            )

        def write(target: Path, kept: frozenset = frozenset()) -> Path:
            exclude = boundary + [n for g in sorted(fixed | kept) for n in groups[g]]
            try:
                with _quiet_quantizer():
                    quantize(str(prepared), str(target), exclude)
            except Exception as e:
                target.unlink(missing_ok=True)
                raise Unsupported(f"onnxruntime {what} cannot quantize this graph: {str(e)[:200]}") from e
            return target

        kept, search = frozenset(), None
        if getattr(p, "max_quality_loss_pct", None) is not None:
            trial = out.with_name(out.stem + ".trial.onnx")

            def run() -> dict:
                s = Search(twin, p.name, p.max_quality_loss_pct, ort_predict_fn(path), ctx.log)
                try:
                    return keep_fp32(s, sorted(set(groups) - fixed), lambda k: ort_predict_fn(write(trial, k)))
                finally:
                    trial.unlink(missing_ok=True)

            search = cached_search(twin, ctx.search_key(p, target="onnx"), run, ctx.log, kept_subset_of(groups))
            kept = frozenset(search["chosen"]["kept_fp32"])
        note = boundary_note(twin, [g for g in sorted(groups) if g not in fixed | kept], sorted(fixed | kept))
        first_last = {"first_last_fp32": sorted(fixed)} if fixed else {}
        ctx.note(p, **note, **first_last, boundary_nodes_fp32=len(boundary), **_search_note(search))
        if not out.exists():
            write(out, kept)
    return out


# name -> (ORT's CalibrationMethod, its extra options). "minmax-ema": min/max smoothed over the
# calibration batches by an exponential moving average, as torch.ao's MovingAverageMinMaxObserver and
# TensorFlow's QAT ranges do; one outlier batch does not stretch the range for every input.
CALIBRATION_METHODS = {
    "minmax": ("MinMax", {}),
    "minmax-ema": ("MinMax", {"CalibMovingAverage": True}),
    "percentile": ("Percentile", {}),
    "entropy": ("Entropy", {}),
}


class _CalibrationReader:
    """onnxruntime.quantization.CalibrationDataReader over batches of training-split inputs."""

    def __init__(self, names: list[str], inputs: tuple[np.ndarray, ...], batch_size: int) -> None:
        n = len(inputs[0])
        self._batches = iter(
            [
                {name: x[i : i + batch_size] for name, x in zip(names, inputs, strict=True)}
                for i in range(0, n, batch_size)
            ]
        )

    def get_next(self) -> dict | None:
        return next(self._batches, None)


@register_pass
@dataclass(frozen=True)
class QuantStaticInt8(Pass):
    """Static int8 for ONNX Runtime: QDQ graph, activation ranges calibrated on the train split.

    Unlike dynamic int8, activation scales are fixed ahead of time (no per-batch range computation),
    so it can pay on convolutions too; the calibration data decides how much quality it costs.
    Ranges are calibrated once per graph and reused by every try of a budget's search.
    """

    name = "quant-static-int8"
    calibration_samples: int = 256
    per_channel: bool = True
    # How activation ranges are chosen from the calibration data (CALIBRATION_METHODS).
    method: str = "minmax-ema"
    # The core's first and last compute layers stay fp32, the quantization literature's convention
    # (DoReFa-Net, Zhou et al. 2016; LSQ, Esser et al. 2020): the first reads the raw features, the
    # last writes the twin's output, and each is a small share of the compute.
    keep_first_last: bool = True
    max_quality_loss_pct: float | None = None
    # A QDQ graph for ONNX Runtime; torch runtimes have no equivalent here.
    requires = Requirements(targets=("onnx",), libraries=("onnxruntime",))

    def __post_init__(self) -> None:
        if isinstance(self.calibration_samples, bool) or not isinstance(self.calibration_samples, int):
            raise ValueError(f"calibration_samples must be an integer, got {self.calibration_samples!r}")
        if self.calibration_samples < 1:
            raise ValueError("calibration_samples must be >= 1")
        if not isinstance(self.keep_first_last, bool):
            raise ValueError(f"keep_first_last must be true or false, got {self.keep_first_last!r}")
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"method must be one of {sorted(CALIBRATION_METHODS)}, got {self.method!r}")
        check_budget(self.max_quality_loss_pct)

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        return model  # exported in fp32; ORT's quantizer rewrites the graph (apply_onnx)

    def apply_onnx(self, path: Path, ctx: PassContext) -> Path:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        calibration = path.with_name(path.stem + f".calibration-{self.method}-{self.calibration_samples}.json")

        # Inputs and weights of the compute ops in int8, their outputs left in fp32 (no Q/DQ after a
        # MatMul/Gemm/Conv): the core's last output reaches the fp32 boundary unquantised, and the
        # residual adds between units stay fp32. Smoke, test split: GNN +14.7 % -> +10.1 %,
        # transformer +2.8 % -> +0.9 %, diffusion +0.2 % -> -0.03 %. Then the first and last layers
        # in fp32 and minmax-ema ranges (percentile before): GNN +10.1 % -> +3.0 %, transformer
        # +0.9 % -> +0.5 %, diffusion -0.05 %. SmoothQuant (alpha 0.5) was tried on top and
        # helped none of the three consistently, so it is not applied.
        method, method_options = CALIBRATION_METHODS[self.method]

        def quantize(src: str, out: str, exclude: list[str]) -> None:
            names = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
            inputs = ctx.twin.example_inputs(self.calibration_samples, seed=0, split="train")
            quantize_static(
                src, out, _CalibrationReader(names, inputs, batch_size=32),
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                per_channel=self.per_channel, calibrate_method=getattr(CalibrationMethod, method),
                nodes_to_exclude=exclude, calibration_cache_path=str(calibration), op_types_to_quantize=sorted(QUANTIZABLE_OPS),
                extra_options={"OpTypesToExcludeOutputQuantization": sorted(QUANTIZABLE_OPS), **method_options},
            )  # fmt: skip

        try:
            return quantize_onnx(self, path, ctx, ".qdq-int8.onnx", "quantize_static", quantize)
        finally:
            calibration.unlink(missing_ok=True)
