"""`CrossEntropyTask`: one LightningModule for next-token prediction and image classification.

The network maps ``x`` to logits whose last axis is the classes (``(B, T, V)`` for a language
model, ``(B, C)`` for a classifier); the loss is cross-entropy against ``y`` of the matching shape.
AdamMini is built with :func:`lightning_adam_mini.adam_mini_optimizers`; baselines directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import lightning.pytorch as L
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from partitioners import PartitionPlan

from ..lightning import adam_mini_optimizers
from ..lightning.optimizers import with_scheduler
from ..optimizer import AdamMini
from .plans import PlanFactory, auto_plan, baseline_optimizer, uses_plan


def warmup_cosine(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.1
) -> LRScheduler:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_ratio`` * lr at ``total_steps``."""
    if total_steps <= 0:
        raise ValueError(
            f"warmup_cosine needs total_steps > 0 (got {total_steps}); set trainer.max_steps "
            "or scheduler=null"
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


class CrossEntropyTask(L.LightningModule):
    """Args:
    net: the model (``net(x) -> logits``).
    optimizer: partial optimizer class (Hydra ``_partial_: true``): AdamMini or a baseline.
    example_input: one batch of ``x`` (any values); traced on meta tensors for the partition.
    partition: plan factory ``(net, example_inputs) -> PartitionPlan`` (AdamMini only).
    scheduler: partial ``(optimizer) -> LRScheduler`` stepped every optimizer step, or None.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        example_input: Tensor,
        partition: PlanFactory | None = None,
        scheduler: Callable[[Optimizer], LRScheduler] | None = None,
    ):
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.plan_factory = partition or auto_plan
        self.scheduler_factory = scheduler
        self.example_input = example_input
        self._net_plan: PartitionPlan | None = None

    @property
    def uses_plan(self) -> bool:
        return uses_plan(self.optimizer_factory)

    def net_plan(self) -> PartitionPlan:
        """The partition of ``net`` (names as in ``net.named_parameters()``), made once."""
        if self._net_plan is None:
            self._net_plan = self.plan_factory(self.net, (self.example_input,))
        return self._net_plan

    def module_plan(self) -> PartitionPlan:
        """The same plan, named as this LightningModule's parameters (``net.`` prefix)."""
        return PartitionPlan((f"net.{name}", entry) for name, entry in self.net_plan().items())

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.uses_plan:
            self.net_plan()  # traced now, while the net is unsharded (configure_model may shard it)

    def configure_model(self) -> None:
        """Under ModelParallelStrategy (``trainer=fsdp``): FSDP2, the whole net sharded on dim 0."""
        from torch.distributed.fsdp import FSDPModule, fully_shard

        if self.device_mesh is None or isinstance(self.net, FSDPModule):  # also called by validate()
            return
        fully_shard(self.net, mesh=self.device_mesh["data_parallel"])

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        logits = self.net(x)
        return F.cross_entropy(logits.flatten(0, -2).float(), y.flatten())

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch), prog_bar=True, sync_dist=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log("test/loss", self._loss(batch), sync_dist=True)

    def configure_optimizers(self) -> Any:
        if self.uses_plan:
            return adam_mini_optimizers(
                self,
                optimizer=cast(Callable[..., AdamMini], self.optimizer_factory),
                partition=self.module_plan(),
                scheduler=self.scheduler_factory,
            )
        return with_scheduler(baseline_optimizer(self.optimizer_factory, self.net), self.scheduler_factory)
