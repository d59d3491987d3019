"""Lightning's conventions the adapters read: ``example_input_array``, the model input in a batch,
the Trainer a module is attached to, and strategies that flatten parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from torch import Tensor


def as_call_args(example: Any) -> tuple[tuple[Any, ...] | None, dict[str, Any] | None]:
    """Lightning's ``example_input_array`` convention -> (args, kwargs) of ``module(...)``:
    a tuple is unpacked, a dict is passed as keywords, ``None`` is no example, anything else is
    the one argument."""
    if example is None:
        return None, None
    if isinstance(example, tuple):
        return example, None
    if isinstance(example, Mapping):
        return (), dict(example)
    return (example,), None


def example_input_of(module: pl.LightningModule) -> Any:
    """``module.example_input_array``, or ``None`` when it is not set."""
    try:
        return module.example_input_array
    except AttributeError:
        return None


def trainer_of(module: pl.LightningModule) -> pl.Trainer | None:
    """The Trainer ``module`` is attached to, or ``None`` (``module.trainer`` raises then)."""
    try:
        trainer = module.trainer
    except RuntimeError:
        return None
    return trainer if isinstance(trainer, pl.Trainer) else None  # not Fabric's shim


def check_strategy(strategy: Any) -> None:
    """Refuse strategies that flatten parameters (their blocks no longer exist as tensors)."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    if isinstance(strategy, (FSDPStrategy, DeepSpeedStrategy)):
        raise RuntimeError(
            f"AdamMini does not support {type(strategy).__name__}: it flattens parameters into "
            "shards that cut through Adam-mini's blocks. Use ModelParallelStrategy and apply "
            "torch.distributed.fsdp.fully_shard in configure_model (FSDP2), or DDP"
        )


def first_input_of(batch: Any) -> Any:
    """The default model input of a training batch: the batch if it is a tensor, else its first
    element (the ``(inputs, targets)`` convention)."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    raise TypeError(
        f"AdamMiniCallback can't tell the model input in a batch of type {type(batch).__name__}: set "
        "`example_input_array` on the LightningModule or pass "
        "AdamMiniCallback(input_from_batch=lambda batch: ...)"
    )
