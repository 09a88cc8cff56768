"""The numerics boundary: what a pass may change (a twin's core units) and what stays fp32.

A twin names its core units (`Twin.core_units`); everything else in the model (normalisation,
de-normalisation and offsets, a sampler's schedule arithmetic) is its boundary. On torch, a
precision pass wraps each core unit in `Cast` (fp32 in, fp32 out), so the boundary's buffers and
arithmetic never leave fp32, as torch autocast keeps its fp32 op list out of half precision. In an
exported ONNX graph, the dynamo exporter tags every node with the module scopes it came from
(`pkg.torch.onnx.name_scopes`); nodes outside every core unit are kept out of quantisation, as ORT's
`nodes_to_exclude` and onnxconverter-common's block lists do.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch

WHOLE_MODEL = ""  # the unit name of a model whose twin declares no core: all of it
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
# The ops whose multiply-adds quantisation speeds up; the rest of a QDQ graph only moves data.
QUANTIZABLE_OPS = frozenset({"MatMul", "Gemm", "Conv"})


def _to_fp32(out):
    """A unit's output with every floating tensor back in fp32 (tensors, tuples, HF ModelOutputs)."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):  # transformers' ModelOutput is an OrderedDict: set its fields in place
        for k, v in out.items():
            out[k] = _to_fp32(v)
        return out
    if isinstance(out, tuple | list):
        return type(out)(_to_fp32(v) for v in out)
    return out


class Cast(torch.nn.Module):
    """Runs `inner` in another dtype behind fp32 inputs and outputs, so the code around it (the
    boundary, other units, every runtime and the evaluation) sees fp32. Integer inputs (indices,
    timesteps) pass through unchanged."""

    def __init__(self, inner: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def _cast(self, x):
        return x.to(self.dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    def forward(self, *inputs, **kw):
        out = self.inner(*(self._cast(x) for x in inputs), **{k: self._cast(v) for k, v in kw.items()})
        return _to_fp32(out)


def declared_units(twin) -> tuple[str, ...]:
    """The twin's core units as it declares them (a ModuleList by its name), or (WHOLE_MODEL,)."""
    return tuple(type(twin).core_units) or (WHOLE_MODEL,)


def torch_units(twin, model: torch.nn.Module) -> tuple[str, ...]:
    """The core units of `model` that a pass changes one by one: a declared ModuleList becomes its
    layers (each one a unit, each called on its own)."""
    units = []
    for name in declared_units(twin):
        module = model.get_submodule(name)
        if isinstance(module, torch.nn.ModuleList | torch.nn.ModuleDict):
            units += [f"{name}.{child}" for child, _ in module.named_children()]
        else:
            units.append(name)
    return tuple(units)


def replace_module(model: torch.nn.Module, name: str, new: torch.nn.Module) -> torch.nn.Module:
    """`model` with its submodule `name` replaced by `new` (in place); the whole model if name is ''."""
    if name == WHOLE_MODEL:
        return new
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)
    return model


def cast_units(model: torch.nn.Module, units: Iterable[str], dtype: torch.dtype) -> torch.nn.Module:
    """A copy of `model` whose `units` run in `dtype` (each behind fp32 edges); the rest stays fp32."""
    model = copy.deepcopy(model)
    for name in units:
        model = replace_module(model, name, Cast(model.get_submodule(name).to(dtype), dtype))
    return model.eval()


def boundary_note(twin, changed: Iterable[str], kept: Iterable[str] = ()) -> dict:
    """What a record says about the boundary: the core parts a pass changed, those it kept in fp32
    (a budget's choice), and what always stays fp32."""
    whole = declared_units(twin) == (WHOLE_MODEL,)
    return {
        "changed": list(changed),
        "kept_fp32": list(kept),
        "fp32_boundary": "none declared: the whole model is the core" if whole else twin.numerics_boundary,
    }


# --- ONNX -----------------------------------------------------------------------------------


def node_scopes(model) -> dict[str, list[str]]:
    """ONNX node name -> the module scopes the exporter recorded for it (outermost first)."""
    scopes = {}
    for node in model.graph.node:
        for prop in node.metadata_props:
            if prop.key == SCOPES_KEY:
                scopes[node.name] = ast.literal_eval(prop.value)
    return scopes


class OnnxCore(NamedTuple):
    boundary: list[str]
    groups: dict[str, list[str]]
    ends: tuple[str, ...]  # the groups of the first and the last quantizable node, in graph order


def onnx_core(graph_path: Path, source_path: Path, units: tuple[str, ...]) -> OnnxCore:
    """(boundary, groups, ends) of a graph, each graph read once.

    boundary: names of the nodes outside every core unit, what `nodes_to_exclude` keeps in fp32.
    groups: the quantizable core nodes by the innermost module they came from (a Linear or a Conv:
    in an unrolled sampling loop, every step's copy of a layer falls into one group).
    ends: the core's first and last compute layers (the one group twice if there is only one).

    Scopes are read from `graph_path`, else from `source_path` (the export before ORT's preprocessing,
    which keeps node names but may drop their metadata); a node with none (one the optimiser
    added) is counted as boundary: kept fp32, the safe side."""
    import onnx

    graph = onnx.load(str(graph_path), load_external_data=False)
    known = {**node_scopes(onnx.load(str(source_path), load_external_data=False)), **node_scopes(graph)}
    boundary, groups, order = [], {}, []
    for node in graph.graph.node:
        scopes = known.get(node.name)
        if _unit_of(scopes, units) is None:
            boundary.append(node.name)
        elif node.op_type in QUANTIZABLE_OPS:
            scopes = scopes or [node.name]
            module = scopes[-2] if len(scopes) >= 2 else node.name  # the last scope is the fx node itself
            groups.setdefault(module or node.name, []).append(node.name)
            order.append(module or node.name)
    return OnnxCore(sorted(boundary), groups, (order[0], order[-1]) if order else ())


def _unit_of(scopes: list[str] | None, units: tuple[str, ...]) -> str | None:
    """The core unit a node with these module scopes belongs to, or None (boundary)."""
    if units == (WHOLE_MODEL,):
        return WHOLE_MODEL
    if scopes is None:
        return None
    return next((u for u in units if any(s == u or s.startswith(u + ".") for s in scopes)), None)


def boundary_nodes(graph_path: Path, source_path: Path, units: tuple[str, ...]) -> list[str]:
    """Names of the nodes outside every core unit: what `nodes_to_exclude` keeps in fp32."""
    return onnx_core(graph_path, source_path, units).boundary
