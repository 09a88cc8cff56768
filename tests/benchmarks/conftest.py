"""pytest-benchmark's machine_info gets the GPU and driver (its own covers the CPU only)."""


def pytest_benchmark_update_machine_info(config, machine_info):
    import torch

    from bench.measure.environment import cpu_model, gpu_info

    machine_info["cpu_model"] = cpu_model()
    machine_info["torch"] = torch.__version__
    if torch.cuda.is_available():
        machine_info.update(gpu_info())  # gpu_name, driver, power_limit_w
