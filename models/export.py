"""ONNX export (dynamo exporter, dynamic batch) and runtime-neutral predict functions."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from models.registry import PredictFn


def export_onnx(
    model: torch.nn.Module, example_inputs: tuple[np.ndarray, ...], input_names, output_name: str, path: Path
) -> Path:
    """Export with `torch.onnx.export(dynamo=True)`: the legacy TorchScript exporter produces a
    PatchTST graph that ONNX Runtime rejects. The batch axis of every input stays dynamic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    args = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in example_inputs)
    shapes = tuple({0: batch} for _ in args)
    if any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(model.forward).parameters.values()):
        shapes = (shapes,)  # forward(*inputs), e.g. a precision wrapper: torch.export sees one tuple
    model.eval()
    # The exporter narrates every step on stdout and logs warnings about packages it does not need
    # (torchvision); keep the CLI readable.
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=True,
                input_names=list(input_names),
                output_names=[output_name],
                dynamic_shapes=shapes,
                verbose=False,
            )
    finally:
        onnx_log.setLevel(level)
    return path


def torch_predict_fn(model: torch.nn.Module) -> PredictFn:
    model.eval()

    def predict(*inputs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(*(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs)).numpy()

    return predict


def ort_predict_fn(path: Path, threads: int | None = None) -> PredictFn:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def predict(*inputs: np.ndarray) -> np.ndarray:
        return session.run(None, dict(zip(names, inputs, strict=True)))[0]

    return predict
