"""diffusion-forecaster: sample the next 24 steps of bus voltage magnitudes from the last 96 states."""

from models.registry import TwinSpec, register_twin

SPEC = register_twin(
    TwinSpec(
        name="diffusion-forecaster",
        summary="conditional denoising diffusion (DDPM-trained, DDIM sampling) over future bus vm_pu trajectories",
        data="trajectories.npz",
        metric="crps of vm_pu",
        baseline="climatology (training states at the same time of day)",
    )
)
