"""Quantization passes."""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.errors import Unsupported
from compress.base import Pass, PassContext, register_pass


@register_pass
@dataclass(frozen=True)
class QuantDynamicInt8(Pass):
    """Dynamic int8: int8 weights, activations quantized on the fly per batch.

    On ONNX Runtime: `onnxruntime.quantization.quantize_dynamic` (MatMul/Gemm and, per ORT's
    defaults, other supported ops). On torch runtimes: torchao's int8 dynamic-activation config.
    """

    name = "quant-dynamic-int8"

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        if ctx.target == "onnx":  # exported in fp32; ORT's quantizer rewrites the graph (apply_onnx)
            return model
        if importlib.util.find_spec("torchao") is None:
            raise Unsupported("torchao is not installed: no int8 dynamic quantization for torch runtimes")
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        model = copy.deepcopy(model)
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        return model

    def apply_onnx(self, path: Path, ctx: PassContext) -> Path:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        out = path.with_name(path.stem + ".int8.onnx")
        if out.exists():  # one quantized graph serves every batch size
            return out
        prepared = path.with_name(path.stem + ".preprocessed.onnx")
        try:
            # ORT's recommended preprocessing (symbolic shape inference, graph cleanup) first: the
            # dynamo exporter's recorded shapes otherwise contradict the quantizer's inference.
            quant_pre_process(str(path), str(prepared))
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)
        except Exception as e:  # the quantizer cannot type or rewrite some node of this graph
            out.unlink(missing_ok=True)
            raise Unsupported(f"onnxruntime quantize_dynamic cannot quantize this graph: {str(e)[:200]}") from e
        finally:
            prepared.unlink(missing_ok=True)
        return out
