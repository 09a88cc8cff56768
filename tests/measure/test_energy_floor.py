"""The energy floor at the variant's compute precision: a bf16, int8 or fp8 variant is bounded by
its GPU's peak in that precision, not by the fp32 peak (which would put the floor 15-30x too high
and make `energy_over_floor` flatter a quantized variant)."""

import pytest

from bench.measure.recording import cell_energy_floor
from bench.measure.validity import DEVICE_PEAKS, PRECISIONS, compute_precision, energy_floor
from bench.plan import Cell
from compress.base import parse_variant

H100 = {"gpu_name": "NVIDIA H100 80GB HBM3"}


def lineage(*steps):
    return parse_variant(list(steps)).lineage


@pytest.mark.parametrize(
    "steps, precision",
    [
        ((), "fp32"),
        (({"pass": "half"},), "fp16"),
        (({"pass": "half", "dtype": "bfloat16"},), "bf16"),
        (({"pass": "quant-dynamic-int8"},), "int8"),
        (({"pass": "quant-static-int8"},), "int8"),
        (({"pass": "float8"},), "fp8"),
        (({"pass": "prune-structured", "ratio": 0.5}, {"pass": "quant-dynamic-int8"}), "int8"),
        (({"pass": "distill"}, {"pass": "half"}), "fp16"),
        (({"pass": "half"}, {"pass": "distill"}), "fp32"),  # a fresh student, trained in fp32
        (({"pass": "prune-unstructured", "amount": 0.5},), "fp32"),
        (({"pass": "sparsity-2:4"},), "fp16-2:4"),
    ],
)
def test_compute_precision_follows_the_lineage(steps, precision):
    assert compute_precision(lineage(*steps)) == precision


def test_the_floor_uses_the_peak_of_the_precision():
    flops = 1e9
    fp32 = energy_floor(flops, H100)
    assert fp32 == pytest.approx(flops * 700 / 67e12)
    assert energy_floor(flops, H100, "bf16") == pytest.approx(fp32 * 67 / 989)
    assert energy_floor(flops, H100, "fp16") == energy_floor(flops, H100, "bf16")
    assert energy_floor(flops, H100, "int8") == pytest.approx(fp32 * 67 / 1979)
    assert energy_floor(flops, H100, "fp8") == energy_floor(flops, H100, "int8")
    assert energy_floor(flops, H100, "fp16-2:4") == pytest.approx(energy_floor(flops, H100, "fp16") / 2)
    pcie = energy_floor(flops, {"gpu_name": "NVIDIA H100 PCIe"}, "bf16")
    assert pcie == pytest.approx(flops * 350 / 756e12)  # "H100 PCIe" before "H100"
    assert energy_floor(flops, {"gpu_name": "NVIDIA A100-SXM4-80GB"}, "fp8") is None  # no fp8 on Ampere
    assert energy_floor(flops, {"gpu_name": "Tesla T4"}, "fp16") is None  # not in the table
    assert energy_floor(None, H100, "int8") is None


def test_every_table_entry_orders_its_peaks():
    for name, peak in DEVICE_PEAKS.items():
        tflops = peak["tflops"]
        assert set(tflops) <= set(PRECISIONS), name
        assert tflops["fp32"] < tflops["bf16"] == tflops["fp16"] <= tflops["int8"], name
        assert tflops.get("fp8", tflops["int8"]) == tflops["int8"], name


def test_a_cuda_cells_floor_is_taken_at_its_variants_precision():
    def cell(steps, device="cuda"):
        return Cell("g", "grid-gnn", parse_variant(list(steps)), "torch-eager", 8, device)

    flops = 2e6
    reference = cell_energy_floor(cell(()), flops, H100)
    int8 = cell_energy_floor(cell([{"pass": "quant-dynamic-int8"}]), flops, H100)
    assert reference == pytest.approx(energy_floor(flops, H100))
    assert int8 == pytest.approx(reference * 67 / 1979)
    assert cell_energy_floor(cell([{"pass": "half", "dtype": "bfloat16"}], device="cpu"), flops, H100) is None
