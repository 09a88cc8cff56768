"""grid-gnn: estimate every bus voltage (magnitude and angle) from the injections at one instant.

An edge-conditioned message-passing network (torch-geometric `MessagePassing`) over the grid graph.
Its learnable parts are plain `torch.nn.Linear` MLPs so that structured pruning can remove hidden
units. The inference module takes raw per-node injections for a batch of snapshots and returns
physical voltages; normalisation and the fixed grid graph live inside it as buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing

from models.grid.powerflow import VM_BAND_PU, NetworkModel, outside_band, solve_power_flow
from models.registry import Evaluation, PredictFn, TrainableTwin, batched, input_scale, register_twin
from models.surgery import shrink_pair
from models.training import Distillation, FitConfig, fit, teacher_on


@dataclass(frozen=True)
class GNNConfig:
    hidden: int = 32
    layers: int = 6  # message-passing rounds: information travels one edge per round
    fit: FitConfig = FitConfig(lr=3e-3, batch_size=128, max_epochs=40, patience=8, max_seconds=1800)

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.layers < 1:
            raise ValueError("hidden and layers must be >= 1")


def mlp(n_in: int, hidden: int, n_out: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, n_out))


class EdgeConv(MessagePassing):
    """h_i <- h_i + U([h_i, sum_j M([h_i, h_j, e_ij])])."""

    propagate_type = {"h": Tensor, "edge_feat": Tensor}  # lets torch.export trace propagate()

    def __init__(self, hidden: int, edge_dim: int) -> None:
        super().__init__(aggr="add")
        self.message_mlp = mlp(2 * hidden + edge_dim, hidden, hidden)
        self.update_mlp = mlp(2 * hidden, hidden, hidden)

    def forward(self, h: Tensor, edge_index: Tensor, edge_feat: Tensor) -> Tensor:
        aggregated = self.propagate(edge_index, h=h, edge_feat=edge_feat)
        return h + self.update_mlp(torch.cat([h, aggregated], dim=-1))

    def message(self, h_i: Tensor, h_j: Tensor, edge_feat: Tensor) -> Tensor:
        return self.message_mlp(torch.cat([h_i, h_j, edge_feat], dim=-1))


def _standardise(a: np.ndarray, axis: int = 0) -> np.ndarray:
    return (a - a.mean(axis=axis)) / np.maximum(a.std(axis=axis), 1e-6)


class GridGNN(torch.nn.Module):
    """injections (B, N, 2) [p_inj_pu, q_inj_pu] -> voltages (B, N, 2) [vm_pu, va_degree]."""

    def __init__(self, cfg: GNNConfig, grid) -> None:
        super().__init__()
        g, stats = grid.graph, grid.stats
        as_tensor = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        self.n_nodes = len(g["bus_ids"])
        # A copy: `load_state_dict` writes into buffers in place, and this array is the grid's own.
        self.register_buffer("edge_index", torch.tensor(g["edge_index"], dtype=torch.long))
        self.register_buffer("edge_feat", as_tensor(_standardise(g["edge_attr"])))
        self.register_buffer("node_static", as_tensor(_standardise(g["node_attr"])))
        self.register_buffer("inj_mean", as_tensor(np.stack([stats["p_inj_pu_mean"], stats["q_inj_pu_mean"]], -1)))
        self.register_buffer(
            "inj_std", as_tensor(input_scale(np.stack([stats["p_inj_pu_std"], stats["q_inj_pu_std"]], -1)))
        )
        self.register_buffer("out_mean", as_tensor(np.stack([stats["vm_pu_mean"], stats["va_degree_mean"]], -1)))
        self.register_buffer("out_std", as_tensor(np.stack([stats["vm_pu_std"], stats["va_degree_std"]], -1)))
        n_in = 2 + self.node_static.shape[1]
        self.encoder = mlp(n_in, cfg.hidden, cfg.hidden)
        self.convs = torch.nn.ModuleList(EdgeConv(cfg.hidden, self.edge_feat.shape[1]) for _ in range(cfg.layers))
        self.decoder = mlp(cfg.hidden, cfg.hidden, 2)

    def node_features(self, injections: Tensor) -> Tensor:
        """(B, N, 2) raw injections -> (B, N, F) normalised node features."""
        x = (injections - self.inj_mean) / self.inj_std
        return torch.cat([x, self.node_static.expand(x.shape[0], -1, -1)], dim=-1)

    def core(self, x: Tensor, edge_index: Tensor, edge_feat: Tensor) -> Tensor:
        """Message passing on a (batched) graph: node features -> normalised voltages."""
        h = self.encoder(x)
        for conv in self.convs:
            h = conv(h, edge_index, edge_feat)
        return self.decoder(h)

    def forward(self, injections: Tensor) -> Tensor:
        b = injections.shape[0]
        x = self.node_features(injections).reshape(b * self.n_nodes, -1)
        # The same graph for every snapshot: offset its node ids per sample (what Batch does).
        offsets = (torch.arange(b, device=x.device) * self.n_nodes).view(b, 1, 1)
        edge_index = (self.edge_index.unsqueeze(0) + offsets).permute(1, 0, 2).reshape(2, -1)
        out = self.core(x, edge_index, self.edge_feat.repeat(b, 1))
        return out.view(b, self.n_nodes, 2) * self.out_std + self.out_mean


def vm_max_abs_err(pred_vm: np.ndarray, target_vm: np.ndarray) -> float:
    """Worst absolute vm error in p.u. over every (snapshot, bus) given: the worst bus at its worst time."""
    return float(np.abs(np.asarray(pred_vm, np.float64) - target_vm).max())


def vm_violation_detection(
    pred_vm: np.ndarray, target_vm: np.ndarray, band: tuple[float, float] = VM_BAND_PU
) -> tuple[float, float]:
    """(recall, precision) of the predicted band violations against the true ones, counted per
    (snapshot, bus): recall = caught / true violations, precision = caught / predicted violations.

    Zero denominators: with no true violation recall is 1.0 (nothing to miss); with no predicted
    violation precision is 1.0 if there is no true violation either (no false alarm, nothing
    missed), else 0.0 (silence that misses real events is not precise).
    """
    predicted, actual = outside_band(pred_vm, band), outside_band(target_vm, band)
    caught, n_actual, n_predicted = int((predicted & actual).sum()), int(actual.sum()), int(predicted.sum())
    recall = caught / n_actual if n_actual else 1.0
    precision = caught / n_predicted if n_predicted else float(n_actual == 0)
    return recall, precision


@register_twin
class GridGNNTwin(TrainableTwin):
    name = "grid-gnn"
    version = 1
    summary = "message-passing GNN over the grid graph mapping per-bus P/Q injections to vm_pu and va_degree"
    data_files = "graph.npz + snapshots.npz"
    metric = "rmse of vm_pu (non-slack nodes)"
    baseline = "flat start (1.0 p.u.) and the DC approximation"
    required_baselines = ("flat_start", "dc_approximation")
    input_names = ("injections",)
    output_name = "voltages"
    # The reference's training in seconds, at most (all max_epochs), by (size, device), with where
    # the figure comes from: a run's estimate before anything is trained (bench/run/estimate.py).
    training_seconds = {
        ("smoke", "cpu"): (70.0, "measured: 22 to 71 s for 40 epochs on 2 CPU cores (checkpoint metas)"),
        # ~3,072 training snapshots in batches of 64: 48 steps an epoch, each a CPU-side collate of 64
        # graphs and ~450 small kernels (12 rounds, forward and backward): ~15 ms assumed. Rough.
        ("full", "cuda"): (150.0, "rough, no GPU has trained it: 200 epochs x 48 steps x ~15 ms + validation"),
    }

    @classmethod
    def config_for(cls, size: str) -> GNNConfig:
        if size == "smoke":
            return GNNConfig()
        return GNNConfig(
            hidden=128, layers=12, fit=FitConfig(lr=1e-3, batch_size=64, max_epochs=200, patience=15, max_seconds=7200)
        )

    @classmethod
    def scaled_config(cls, config: GNNConfig, width: float, depth: float) -> GNNConfig:
        return replace(config, hidden=max(1, round(config.hidden * width)), layers=max(1, round(config.layers * depth)))

    def build_model(self) -> GridGNN:
        torch.manual_seed(self.config.fit.seed)
        return GridGNN(self.config, self.grid).eval()

    def _rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.grid.snapshots["split"] == self.split_index(split))

    def inputs(self, split: str) -> tuple[np.ndarray, ...]:
        s = self.grid.snapshots
        rows = self._rows(split)
        return (np.stack([s["p_inj_pu"][rows], s["q_inj_pu"][rows]], axis=-1),)

    def targets(self, split: str) -> np.ndarray:
        s = self.grid.snapshots
        rows = self._rows(split)
        return np.stack([s["vm_pu"][rows], s["va_degree"][rows]], axis=-1)

    def train(
        self, model: GridGNN, log, *, fit_cfg: FitConfig | None = None, distill: Distillation | None = None,
        device: str = "cpu",
    ) -> dict:  # fmt: skip
        from torch_geometric.data import Batch, Data
        from torch_geometric.loader import DataLoader

        def graphs(split: str) -> list[Data]:
            with torch.no_grad():
                x = model.node_features(torch.from_numpy(self.inputs(split)[0]))
                y = (torch.from_numpy(self.targets(split)) - model.out_mean) / model.out_std
            return [Data(x=x[i], y=y[i], edge_index=model.edge_index, edge_attr=model.edge_feat) for i in range(len(x))]

        dev = torch.device(device)
        train_graphs, val_batch = graphs("train"), Batch.from_data_list(graphs("val")).to(dev)
        cfg = fit_cfg or self.config.fit
        model.to(dev)
        distill = teacher_on(distill, dev)

        def loss_fn(batch):
            batch = batch.to(dev)
            pred = model.core(batch.x, batch.edge_index, batch.edge_attr)
            if distill is None:
                return torch.nn.functional.mse_loss(pred, batch.y)
            teacher = lambda: distill.teacher.core(batch.x, batch.edge_index, batch.edge_attr)  # noqa: E731
            return distill.loss(torch.nn.functional.mse_loss, pred, batch.y, teacher)

        def val_loss():
            return torch.nn.functional.mse_loss(
                model.core(val_batch.x, val_batch.edge_index, val_batch.edge_attr), val_batch.y
            ).item()

        def epoch(generator):
            return DataLoader(train_graphs, batch_size=cfg.batch_size, shuffle=True, generator=generator)

        try:
            return fit(model, cfg, epoch, loss_fn, val_loss, log)
        finally:
            model.cpu()

    def evaluate(self, predict_fn: PredictFn, split: str = "test") -> Evaluation:
        (injections,) = self.inputs(split)
        target = self.targets(split)
        flat, dc = self._baselines(injections)
        return Evaluation(
            primary="vm_rmse",
            metrics=self._errors(batched(predict_fn, (injections,)), target),
            baselines={"flat_start": self._errors(flat, target), "dc_approximation": self._errors(dc, target)},
        )

    def _errors(self, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """Mean errors, the worst bus's error and voltage-band violation detection, non-slack nodes."""
        # The slack node's voltage is fixed and trivially "predicted"; it would only dilute the error.
        keep = np.arange(target.shape[1]) != int(self.grid.graph["slack_node"])
        err = (pred - target)[:, keep].astype(np.float64)
        vm_pred, vm_target = pred[:, keep, 0], target[:, keep, 0]
        recall, precision = vm_violation_detection(vm_pred, vm_target)
        return {
            "vm_rmse": float(np.sqrt((err[..., 0] ** 2).mean())),
            "vm_mae": float(np.abs(err[..., 0]).mean()),
            "va_mae_deg": float(np.abs(err[..., 1]).mean()),
            "vm_max_abs_err": vm_max_abs_err(vm_pred, vm_target),
            "vm_violation_recall": recall,
            "vm_violation_precision": precision,
        }

    def _baselines(self, injections: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat start and DC approximation, both at vm = 1.0 p.u.

        Angles start from the no-load solution, which carries the transformers' phase shifts (as
        pandapower's own flat start does); the DC approximation adds B^-1 P on top.
        """
        g = self.grid.graph
        ybus = g["ybus_re"] + 1j * g["ybus_im"]
        slack = int(g["slack_node"])
        vm_s, va_s = g["v_slack"]
        network = NetworkModel(ybus, slack, vm_s * np.exp(1j * np.radians(va_s)), float(g["base_mva"]))
        no_load_deg = np.degrees(np.angle(solve_power_flow(network, np.zeros((1, len(ybus))))[0]))
        pq = np.arange(len(ybus)) != slack
        b = -ybus.imag[np.ix_(pq, pq)]
        theta = np.zeros((len(injections), len(ybus)))
        theta[:, pq] = np.linalg.solve(b, injections[:, pq, 0].T.astype(np.float64)).T
        ones = np.ones(injections.shape[:2])
        flat = np.stack([ones, np.broadcast_to(no_load_deg, ones.shape)], axis=-1)
        dc = np.stack([ones, no_load_deg + np.degrees(theta)], axis=-1)
        return flat, dc

    numerics_boundary = (
        "input normalisation (inj_mean, inj_std), static node and edge features, output "
        "de-normalisation (out_std, out_mean ~1.0 p.u.) and the residual stream between rounds"
    )

    # Each message-passing round is a unit: its residual add (h + update) stays fp32, as AMP keeps a
    # residual stream in fp32 while the MLPs run in half precision.
    core_units = ("encoder", "convs", "decoder")

    def prune_structured(self, model: GridGNN, ratio: float) -> None:
        """The hidden units of every MLP (Linear -> SiLU -> Linear); the node and edge state widths stay."""
        for seq in model.modules():
            if isinstance(seq, torch.nn.Sequential):
                shrink_pair(seq[0], seq[2], ratio)

    def example_inputs(self, batch_size: int, seed: int = 0, split: str = "val") -> tuple[np.ndarray, ...]:
        x = self.inputs(split)[0]
        return (x[np.random.default_rng(seed).integers(0, len(x), batch_size)],)
