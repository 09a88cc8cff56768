"""Content hashes that tie a measurement to the exact weights and artifact bytes it measured.

A record names them; an export re-computes them and refuses to write anything else.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over every tensor of the model's state dict: name, dtype, shape and raw bytes, in name
    order. Quantized tensor subclasses (torchao) are hashed through the plain tensors they wrap, so
    every variant has a hash, including those safetensors cannot store."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        _update(digest, name, value)
    return digest.hexdigest()


def _update(digest, name: str, value) -> None:
    if not isinstance(value, torch.Tensor):  # extra state: hashed by its printed form
        digest.update(f"{name}={value!r};".encode())
        return
    if type(value) not in (torch.Tensor, torch.nn.Parameter) and hasattr(value, "__tensor_flatten__"):
        inner, _ = value.__tensor_flatten__()
        digest.update(f"{name}:{type(value).__name__};".encode())
        for attr in inner:
            _update(digest, f"{name}.{attr}", getattr(value, attr))
        return
    tensor = value.detach().cpu().contiguous()
    digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def files_sha256(paths: list[Path]) -> str:
    """SHA-256 over the bytes of several files in the given order (an ONNX graph, then its external data)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def onnx_files(graph: Path) -> list[Path]:
    """An ONNX artifact's files: the graph and, where the exporter wrote one, its external data file."""
    data = graph.with_name(graph.name + ".data")
    return [graph, data] if data.is_file() else [graph]


def state_tensors(model: torch.nn.Module):
    """(name, tensor) of every tensor the model's state holds, including those packed in tuples
    (torch's dynamic int8 Linear keeps its int8 weight and bias in `_packed_params`)."""

    def walk(name: str, value):
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, tuple | list):
            for i, v in enumerate(value):
                yield from walk(f"{name}.{i}", v)

    for name, value in model.state_dict().items():
        yield from walk(name, value)


def state_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for _, t in state_tensors(model))


def parameter_count(model: torch.nn.Module) -> int:
    """Trainable parameters, and the weights a quantized layer packs away from `parameters()`."""
    packed = sum(t.numel() for name, t in state_tensors(model) if "_packed_params" in name)
    return sum(p.numel() for p in model.parameters()) + packed
