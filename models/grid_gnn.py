"""grid-gnn: estimate every bus voltage (magnitude and angle) from the injections at one instant."""

from models.registry import TwinSpec, register_twin

SPEC = register_twin(
    TwinSpec(
        name="grid-gnn",
        summary="message-passing GNN over the grid graph mapping per-bus P/Q injections to vm_pu and va_degree",
        data="graph.npz + snapshots.npz",
        metric="rmse of vm_pu",
        baseline="flat start (1.0 p.u.) and the DC approximation",
    )
)
