"""The training loop every twin shares: AdamW, early stopping on validation, best weights kept."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch

from models.errors import TwinbenchError


@dataclass(frozen=True)
class FitConfig:
    lr: float
    batch_size: int
    max_epochs: int
    patience: int  # epochs without a validation improvement before stopping
    seed: int = 0
    weight_decay: float = 0.0
    # A safety limit, not the schedule: training stops on max_epochs and patience only, so its
    # result is a function of config, data and seed. Past this limit fit() raises TrainingTimeLimit
    # rather than return a shorter-trained model that depends on how busy the machine was.
    max_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1 or self.max_seconds <= 0:
            raise ValueError(f"invalid training config {self}")


class TrainingTimeLimit(TwinbenchError):
    """Training ran past its config's max_seconds before it was done: no model is produced."""


def fit(
    model: torch.nn.Module,
    cfg: FitConfig,
    batches: Callable[[torch.Generator], Iterable],
    loss_fn: Callable[[object], torch.Tensor],
    val_loss: Callable[[], float],
    log: Callable[[str], None] = print,
) -> dict:
    """Train `model` in place and leave it holding the weights of its best validation epoch.

    batches(generator) yields one epoch of training batches (shuffled with the generator);
    loss_fn(batch) is the training loss; val_loss() is evaluated under no_grad in eval mode.
    Stops after cfg.max_epochs or cfg.patience epochs without improvement ("stopped" in the summary);
    raises TrainingTimeLimit if an epoch ends past cfg.max_seconds with epochs still to go.
    """
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: 0.5 * (1 + math.cos(math.pi * min(epoch, cfg.max_epochs) / cfg.max_epochs))
    )
    best, best_state, best_epoch, history = math.inf, None, -1, []
    started = time.perf_counter()
    stopped = "max_epochs"
    for epoch in range(cfg.max_epochs):
        model.train()
        total, count = 0.0, 0
        for batch in batches(generator):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total, count = total + loss.item(), count + 1
        schedule.step()
        model.eval()
        with torch.no_grad():
            val = float(val_loss())
        history.append(val)
        if val < best:
            best, best_epoch, best_state = val, epoch, copy.deepcopy(model.state_dict())
        log(
            f"  epoch {epoch:3d}  train {total / max(count, 1):.5f}  val {val:.5f}{'  *' if epoch == best_epoch else ''}"
        )
        if epoch - best_epoch >= cfg.patience:
            stopped = "patience"
            break
        elapsed = time.perf_counter() - started
        if elapsed > cfg.max_seconds and epoch + 1 < cfg.max_epochs:
            raise TrainingTimeLimit(
                f"training passed its safety limit max_seconds={cfg.max_seconds:g} after {epoch + 1} of at most "
                f"{cfg.max_epochs} epochs ({elapsed:.0f} s; {cfg}), so no model is kept. The machine may be loaded "
                "or too slow for this model size; raise the limit or use a smaller size."
            )
    model.load_state_dict(best_state)
    model.eval()
    return {
        "epochs": len(history),
        "best_epoch": best_epoch,
        "best_val_loss": best,
        "val_history": history,
        "stopped": stopped,
        "train_seconds": round(time.perf_counter() - started, 2),
    }


@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation (Hinton et al.): the student learns from its teacher's outputs as well
    as from the labels, loss = (1 - weight) * loss(student, labels) + weight * loss(student, teacher).
    The teacher's outputs are smoother targets than noisy labels, which is what lets a smaller model
    keep most of the teacher's quality."""

    teacher: torch.nn.Module
    weight: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"distillation weight must be in [0, 1], got {self.weight}")

    def loss(
        self, criterion: Callable, pred: torch.Tensor, label: torch.Tensor, teacher_pred: Callable
    ) -> torch.Tensor:
        """teacher_pred() computes the teacher's output for the same batch (called without gradients)."""
        with torch.no_grad():
            self.teacher.eval()
            target = teacher_pred()
        return (1 - self.weight) * criterion(pred, label) + self.weight * criterion(pred, target)


def teacher_on(distill: Distillation | None, device: torch.device) -> Distillation | None:
    """The distillation with a copy of its teacher on the training device (the teacher passed in,
    a pass's input model, must not move)."""
    if distill is None:
        return None
    return replace(distill, teacher=copy.deepcopy(distill.teacher).to(device).eval())


def recovery(cfg: FitConfig, epochs: int) -> FitConfig:
    """A short fine-tune after a pass changed the weights: a few epochs at a lower learning rate."""
    return replace(cfg, lr=cfg.lr / 4, max_epochs=epochs, patience=min(cfg.patience, epochs))
