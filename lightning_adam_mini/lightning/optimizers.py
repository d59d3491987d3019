"""``adam_mini_optimizers``: what a LightningModule's ``configure_optimizers`` returns, in one line.

def configure_optimizers(self):
    return adam_mini_optimizers(self, lr=3e-4, weight_decay=0.1,
                                scheduler=lambda opt: CosineAnnealingLR(opt, T_max=1000))
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import lightning.pytorch as pl
from torch.optim import Optimizer

from partitioners import PartitionPlan

from ..in_backward import check_trainer
from ..optimizer import AdamMini
from .callback import AdamMiniCallback
from .conventions import as_call_args, check_strategy, example_input_of, trainer_of

OptimizerT = TypeVar("OptimizerT", bound=Optimizer)


def with_scheduler(
    optimizer: OptimizerT,
    scheduler: Callable[[Optimizer], Any] | None,
    interval: Literal["step", "epoch"] = "step",
    frequency: int = 1,
    monitor: str | None = None,
) -> OptimizerT | dict[str, Any]:
    """What ``configure_optimizers`` returns: the optimizer alone, or with ``scheduler(optimizer)``
    in Lightning's ``{"optimizer": ..., "lr_scheduler": {...}}`` format."""
    if scheduler is None:
        return optimizer
    if not callable(scheduler):
        raise TypeError(
            "scheduler must be a callable taking the optimizer (e.g. "
            "`lambda opt: CosineAnnealingLR(opt, T_max=1000)`), since the optimizer is made here"
        )
    if interval not in ("step", "epoch"):
        raise ValueError(f"interval must be 'step' or 'epoch', got {interval!r}")
    config: dict[str, Any] = {"scheduler": scheduler(optimizer), "interval": interval, "frequency": frequency}
    if monitor is not None:
        config["monitor"] = monitor
    return {"optimizer": optimizer, "lr_scheduler": config}


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
            ``module.example_input_array``) once on rank 0 and broadcast. With neither, the
            optimizer binds itself at its first step, from the forward it saw (names then are
            those of the network the LightningModule wraps).
        optimizer: a factory called with the bare parameters (LightningCLI's ``OptimizerCallable``,
            Hydra's ``_partial_: true``); it replaces ``lr`` ... ``adam_mini_kwargs``.

    Returns the optimizer, or ``{"optimizer": ..., "lr_scheduler": {...}}`` with a scheduler.
    """
    trainer = trainer_of(module)
    strategy = trainer.strategy if trainer is not None else None
    if strategy is not None:
        check_strategy(strategy)
        if strategy is not None and adam_mini_kwargs.get("step_in_backward"):
            check_trainer(trainer)
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

    # Trainer.callbacks is set by its callback connector, so type checkers don't see it
    callbacks = trainer.callbacks if trainer is not None else []  # pyright: ignore[reportAttributeAccessIssue]
    callback = next((cb for cb in callbacks if isinstance(cb, AdamMiniCallback)), None)
    plan = partition if partition is not None or callback is None else callback.plan
    example = example_input if example_input is not None else example_input_of(module)
    if plan is not None or (callback is None and example is not None):
        args, kwargs = as_call_args(example)
        opt.bind(module, plan, args, kwargs, strategy=strategy)
    # else unbound: the callback binds it at the first batch, or it binds itself at its first step
    return with_scheduler(opt, scheduler, interval, frequency, monitor)
