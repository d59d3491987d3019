"""``adam_mini_optimizers``: what a LightningModule's ``configure_optimizers`` returns, in one line.

def configure_optimizers(self):
    return adam_mini_optimizers(self, lr=3e-4, weight_decay=0.1,
                                scheduler=lambda opt: CosineAnnealingLR(opt, T_max=1000))
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import lightning.pytorch as pl
from torch.optim import Optimizer

from partitioners import PartitionPlan

from ..in_backward import check_trainer
from ..optimizer import AdamMini
from .plan_sync import check_strategy, example_input_of, plan_for_module


def _callback_of(module: pl.LightningModule):
    from .callback import AdamMiniCallback

    trainer = module._trainer
    if trainer is None:
        return None
    return next((cb for cb in trainer.callbacks if isinstance(cb, AdamMiniCallback)), None)


def adam_mini_optimizers(
    module: pl.LightningModule,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    scheduler: Callable[[Optimizer], Any] | None = None,
    interval: Literal["step", "epoch"] = "step",
    frequency: int = 1,
    monitor: str | None = None,
    partition: PartitionPlan | str | os.PathLike | None = None,
    example_input: Any = None,
    optimizer: Callable[..., AdamMini] | None = None,
    **adam_mini_kwargs: Any,
) -> AdamMini | dict[str, Any]:
    """An :class:`AdamMini` over ``module``'s trainable parameters, with its plan, and optionally
    an LR scheduler in Lightning's dict format.

    Args:
        module: the LightningModule (``self`` in ``configure_optimizers``); whatever strategy has
            wrapped it, its own parameters are the ones optimized.
        lr, betas, eps, weight_decay, adam_mini_kwargs: passed to ``AdamMini``.
        scheduler: ``optimizer -> LR scheduler`` (a lambda or ``functools.partial``).
        interval, frequency, monitor: Lightning's scheduler settings (``monitor`` for
            ``ReduceLROnPlateau``).
        partition: a plan or YAML path; default: the plan of :class:`AdamMiniCallback` if the
            Trainer has one, else ``auto_partition`` traced with ``example_input`` (default:
            ``module.example_input_array``) once on rank 0 and broadcast.
        optimizer: a factory called with the bare parameters (LightningCLI's ``OptimizerCallable``,
            Hydra's ``_partial_: true``); it replaces ``lr`` ... ``adam_mini_kwargs``.

    Returns the optimizer, or ``{"optimizer": ..., "lr_scheduler": {...}}`` with a scheduler.
    """
    if scheduler is not None and not callable(scheduler):
        raise TypeError(
            "adam_mini_optimizers: scheduler must be a callable taking the optimizer (e.g. "
            "`lambda opt: CosineAnnealingLR(opt, T_max=1000)`), since the optimizer is made here"
        )
    if interval not in ("step", "epoch"):
        raise ValueError(f"adam_mini_optimizers: interval must be 'step' or 'epoch', got {interval!r}")
    if module._trainer is not None:
        check_strategy(module._trainer.strategy)
        if adam_mini_kwargs.get("step_in_backward"):
            check_trainer(module._trainer)
    params = [p for p in module.parameters() if p.requires_grad]
    if optimizer is not None:
        opt = optimizer(params)
        if not isinstance(opt, AdamMini):
            raise TypeError(
                f"adam_mini_optimizers: optimizer= made a {type(opt).__name__}; give a factory of "
                "AdamMini, e.g. functools.partial(AdamMini, lr=3e-4)"
            )
    else:
        opt = AdamMini(params, lr, betas, eps, weight_decay, **adam_mini_kwargs)

    plan = partition
    callback = _callback_of(module)
    if plan is None and callback is not None:
        plan = callback.plan  # None until the first batch when there is no example input
    if plan is None and callback is None:
        example = example_input if example_input is not None else example_input_of(module)
        if example is None:
            raise ValueError(
                "adam_mini_optimizers needs an example input to trace the partition: set "
                "`self.example_input_array` in the LightningModule, pass example_input=..., pass "
                "partition=..., or add lightning_adam_mini.AdamMiniCallback() to the Trainer (it "
                "traces the first training batch)"
            )
        plan = plan_for_module(module, example)
    if plan is not None:
        opt.bind(module, partition=plan)

    if scheduler is None:
        return opt
    config: dict[str, Any] = {"scheduler": scheduler(opt), "interval": interval, "frequency": frequency}
    if monitor is not None:
        config["monitor"] = monitor
    return {"optimizer": opt, "lr_scheduler": config}
