"""Which GPU's energy counter a CUDA meter reads when CUDA_VISIBLE_DEVICES renumbers the GPUs.

Ray gives a task one GPU by setting CUDA_VISIBLE_DEVICES (e.g. "1"), so the task's `cuda:0` is the
node's GPU 1. NVML does not renumber: its index 0 is still the node's GPU 0. Zeus documents that its
`gpu_indices` are CUDA indices after CUDA_VISIBLE_DEVICES; these tests check that a meter chosen for
`cuda:0` reads GPU 1's counter, not GPU 0's, and that `visible_gpu_index` names the physical GPU.

NVML is stubbed at its boundary (pynvml patched with autospec, as Zeus's own tests and
tests/measure/test_measure.py do): two Hopper GPUs whose counters advance by different, known amounts per
read, so a window's joules say which GPU was read. torch.cuda is made to fail if touched: choosing
and reading an nvml meter must not need it (this runs on CPU-only CI).
"""

import pynvml
import pytest

from bench.measure.meters import NoneMeter, choose_meter
from bench.measure.nvml import visible_gpu_index
from tests.conftest import stubbed_nvml

START_MJ = {0: 5_000_000, 1: 9_000_000}
STEP_MJ = {0: 1_000_000, 1: 7_000}  # per read: GPU 0 +1000 J, GPU 1 +7 J
STEP_J = {i: mj / 1000 for i, mj in STEP_MJ.items()}
UUIDS = {0: "GPU-00000000-aaaa-bbbb-cccc-000000000000", 1: "GPU-11111111-aaaa-bbbb-cccc-111111111111"}


@pytest.fixture
def two_gpus(monkeypatch):
    """Two H100s behind a stubbed NVML. Handles are "gpu0" / "gpu1" (physical NVML indices); each
    read of a GPU's total energy counter returns its previous value + STEP_MJ[i]."""
    for var in ("CUDA_VISIBLE_DEVICES", "ZEUSD_SOCK_PATH", "ZEUSD_HOST_PORT", "ZEUSD_TOKEN"):
        monkeypatch.delenv(var, raising=False)

    names = ["nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex",
             "nvmlDeviceGetHandleByUUID", "nvmlDeviceGetUUID", "nvmlDeviceGetIndex", "nvmlDeviceGetC2cModeInfoV",
             "nvmlDeviceGetArchitecture", "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetName"]  # fmt: skip

    def index_of(handle):
        if handle not in ("gpu0", "gpu1"):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return int(handle[-1])

    def handle_by_index(i):
        if not 0 <= i < 2:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return f"gpu{i}"

    def handle_by_uuid(uuid):
        for i, u in UUIDS.items():
            if uuid in (u, u.encode()):
                return f"gpu{i}"
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    counters = dict(START_MJ)

    def total_energy(handle):
        i = index_of(handle)
        counters[i] += STEP_MJ[i]
        return counters[i]

    with stubbed_nvml(names) as mocks:
        mocks["nvmlDeviceGetCount"].return_value = 2
        mocks["nvmlDeviceGetHandleByIndex"].side_effect = handle_by_index
        mocks["nvmlDeviceGetHandleByUUID"].side_effect = handle_by_uuid
        mocks["nvmlDeviceGetUUID"].side_effect = lambda h: UUIDS[index_of(h)]
        mocks["nvmlDeviceGetIndex"].side_effect = index_of
        mocks["nvmlDeviceGetC2cModeInfoV"].side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)  # not Grace
        mocks["nvmlDeviceGetArchitecture"].return_value = pynvml.NVML_DEVICE_ARCH_HOPPER
        mocks["nvmlDeviceGetName"].return_value = "NVIDIA H100 80GB HBM3"
        mocks["nvmlDeviceGetTotalEnergyConsumption"].side_effect = total_energy
        yield mocks


@pytest.fixture
def no_torch_cuda(monkeypatch):
    """torch.cuda fails loudly if choosing or reading a meter touches it."""
    import torch

    def touched(*args, **kwargs):
        raise AssertionError("torch.cuda was called")

    for name in ("is_available", "device_count", "current_device", "synchronize", "init"):
        monkeypatch.setattr(torch.cuda, name, touched)


def window_joules(meter):
    meter.begin("k")
    reading = meter.end("k")
    assert reading.source == meter.source
    return reading.joules


def energy_reads(mocks):
    """Physical GPUs whose energy counter was read, in order."""
    return [c.args[0] for c in mocks["nvmlDeviceGetTotalEnergyConsumption"].call_args_list]


def test_ray_style_single_gpu_reads_the_visible_gpu_not_nvml_gpu_0(two_gpus, no_torch_cuda, monkeypatch):
    """A Ray task given the node's GPU 1 sees it as cuda:0; its window must be GPU 1's +7 J."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    choice = choose_meter("cuda", 0)
    assert choice.meter.source == "nvml", choice.why
    assert window_joules(choice.meter) == pytest.approx(STEP_J[1])  # 7 J, not 1000 J
    assert set(energy_reads(two_gpus)) == {"gpu1"}
    assert visible_gpu_index(0) == 1


def test_without_cuda_visible_devices_cuda_0_is_nvml_gpu_0(two_gpus, no_torch_cuda):
    choice = choose_meter("cuda", 0)
    assert choice.meter.source == "nvml", choice.why
    assert window_joules(choice.meter) == pytest.approx(STEP_J[0])  # 1000 J
    assert set(energy_reads(two_gpus)) == {"gpu0"}
    assert visible_gpu_index(0) == 0


@pytest.mark.parametrize(
    "visible, cuda_index, physical",
    [("0,1", 0, 0), ("0,1", 1, 1), ("1,0", 0, 1), ("1,0", 1, 0), (" 1 , 0 ", 0, 1)],
)
def test_cuda_index_maps_through_the_visible_list(two_gpus, no_torch_cuda, monkeypatch, visible, cuda_index, physical):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpu_index(cuda_index) == physical
    choice = choose_meter("cuda", cuda_index)
    assert choice.meter.source == "nvml", choice.why
    assert window_joules(choice.meter) == pytest.approx(STEP_J[physical])
    assert set(energy_reads(two_gpus)) == {f"gpu{physical}"}


def test_meter_beyond_the_visible_gpus_is_none_not_another_gpu(two_gpus, no_torch_cuda, monkeypatch):
    """cuda:1 does not exist when one GPU is visible: no meter, rather than NVML's GPU 1."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    choice = choose_meter("cuda", 1)
    assert isinstance(choice.meter, NoneMeter) and choice.why.startswith("none:")
    assert energy_reads(two_gpus) == []


@pytest.mark.parametrize("case", ["hidden", "mig", "no_nvml"])
def test_no_usable_gpu_gives_a_labelled_none_meter(two_gpus, no_torch_cuda, monkeypatch, case):
    """No GPU Zeus can list: CUDA_VISIBLE_DEVICES="" hides them all, a MIG slice has no NVML energy
    counter, or NVML will not initialise. Unknown energy (a none meter), never an error or GPU 0's."""
    if case == "hidden":
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    elif case == "mig":
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-22222222-aaaa-bbbb-cccc-222222222222")
    else:
        two_gpus["nvmlInit"].side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    choice = choose_meter("cuda", 0)
    assert isinstance(choice.meter, NoneMeter) and choice.why.startswith("none:")
    assert window_joules(choice.meter) is None
    assert energy_reads(two_gpus) == []


def test_uuid_visible_devices_are_resolved_by_nvml_or_unknown(two_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", UUIDS[1])
    assert visible_gpu_index(0) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{UUIDS[1]},{UUIDS[0]}")
    assert visible_gpu_index(1) == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")  # a prefix NVML does not resolve: unknown, not a guess
    assert visible_gpu_index(0) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert visible_gpu_index(3) is None  # beyond the visible devices


def test_uuid_visible_devices_never_read_the_wrong_gpu(two_gpus, no_torch_cuda, monkeypatch):
    """CUDA_VISIBLE_DEVICES may name GPUs by UUID. Zeus 0.16 parses it with int() and raises
    ValueError, which ZeusMonitor does not catch. Correct: either a labelled none meter, or the
    counter of the GPU the UUID names (GPU 1's 7 J), never an exception and never GPU 0's counter."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", UUIDS[1])
    choice = choose_meter("cuda", 0)
    if choice.meter.source == "nvml":
        assert window_joules(choice.meter) == pytest.approx(STEP_J[1])
        assert set(energy_reads(two_gpus)) == {"gpu1"}
    else:
        assert isinstance(choice.meter, NoneMeter) and choice.why.startswith("none:")
        assert "gpu0" not in energy_reads(two_gpus)
