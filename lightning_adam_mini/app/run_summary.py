"""`RunSummary`: the numbers a run reports at the end (loss curves, tokens/s, memory, state bytes)."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterable
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.optim import Optimizer

from ..stats import optimizer_state_bytes


def adamw_state_bytes(model: nn.Module) -> int:
    """What ``torch.optim.AdamW`` keeps for ``model``: m and v in each param's dtype + a fp32 step."""
    return sum(2 * p.numel() * p.element_size() + 4 for p in model.parameters() if p.requires_grad)


#: state keys that hold second moments: torch's Adam/AdamW and AdamMini, the official Adam-mini
SECOND_MOMENT_KEYS = ("exp_avg_sq", "v", "vmean")


def second_moment_values(optimizers: Iterable[Optimizer]) -> int:
    """How many second-moment values the optimizers keep (one per element for AdamW, one per
    block for Adam-mini): the x axis of a memory-quality frontier."""
    return sum(
        t.numel()
        for opt in optimizers
        for state in opt.state.values()
        for key, t in state.items()
        if key in SECOND_MOMENT_KEYS and isinstance(t, Tensor)
    )


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured): CUDA's peak allocated memory, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "peak CUDA memory allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak process RSS"


class RunSummary(Callback):
    """Records the train loss of every step, the val loss of every validation, and the time and
    tokens (target elements) of the training steps; :meth:`summary` turns them into the run's report."""

    def __init__(self) -> None:
        self.train_curve: list[tuple[int, float]] = []
        self.val_curve: list[tuple[int, float]] = []
        self.test_loss = float("nan")
        self.train_seconds = 0.0
        self.tokens = 0
        self._t0 = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = float(outputs["loss"])  # synchronizes, so the time below is the step's real time
        self.train_seconds += time.perf_counter() - self._t0
        self.tokens += batch[1].numel() * trainer.world_size
        self.train_curve.append((trainer.global_step, loss))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or value is None:
            return
        point = (trainer.global_step, float(value))
        if self.val_curve and self.val_curve[-1][0] == point[0]:
            self.val_curve[-1] = point  # a validate() after fit at the same step
        else:
            self.val_curve.append(point)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("test/loss")
        if value is not None:
            self.test_loss = float(value)

    # Kept in Lightning's checkpoints, so a resumed run reports its whole history.
    def state_dict(self) -> dict[str, Any]:
        return {
            "train_curve": self.train_curve,
            "val_curve": self.val_curve,
            "train_seconds": self.train_seconds,
            "tokens": self.tokens,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_curve = [tuple(p) for p in state_dict["train_curve"]]
        self.val_curve = [tuple(p) for p in state_dict["val_curve"]]
        self.train_seconds = state_dict["train_seconds"]
        self.tokens = state_dict["tokens"]

    def summary(self, trainer: L.Trainer, model: nn.Module) -> dict[str, Any]:
        state = optimizer_state_bytes(trainer.optimizers)
        adamw = adamw_state_bytes(model)
        peak, peak_kind = peak_memory(trainer.strategy.root_device)
        return {
            "final_val_loss": self.val_curve[-1][1] if self.val_curve else float("nan"),
            # on the data module's test split (NaN without one): report it when val chose settings
            "final_test_loss": self.test_loss,
            "steps": trainer.global_step,
            "tokens": self.tokens,
            "train_seconds": self.train_seconds,
            "tokens_per_s": self.tokens / self.train_seconds if self.train_seconds else float("nan"),
            "peak_memory_bytes": peak,
            "peak_memory_kind": peak_kind,
            "optimizer_state_bytes": state,
            "second_moment_values": second_moment_values(trainer.optimizers),
            "adamw_state_bytes": adamw,
            "state_vs_adamw": state / adamw if adamw else float("nan"),
            "num_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "device": str(trainer.strategy.root_device),
            "train_curve": self.train_curve,
            "val_curve": self.val_curve,
        }
