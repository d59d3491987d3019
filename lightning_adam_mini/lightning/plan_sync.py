"""The plan of a LightningModule: traced once, on global rank 0, from the unsharded module, and
broadcast through the strategy so that every rank holds the identical plan."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from torch import Tensor

from partitioners import PartitionPlan, auto_partition


def as_call_args(example: Any) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """Lightning's ``example_input_array`` convention -> (args, kwargs) of ``module(...)``:
    a tuple is unpacked, a dict is passed as keywords, anything else is the one argument."""
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


def has_sharded_params(module: pl.LightningModule) -> bool:
    from ..sharded import is_sharded

    return any(is_sharded(p) for p in module.parameters())


def check_strategy(strategy: Any) -> None:
    """Refuse strategies that flatten parameters (their blocks no longer exist as tensors)."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    if isinstance(strategy, (FSDPStrategy, DeepSpeedStrategy)):
        raise RuntimeError(
            f"AdamMini does not support {type(strategy).__name__}: it flattens parameters into "
            "shards that cut through Adam-mini's blocks. Use ModelParallelStrategy and apply "
            "torch.distributed.fsdp.fully_shard in configure_model (FSDP2), or DDP"
        )


def plan_for_module(module: pl.LightningModule, example: Any, strategy: Any = None) -> PartitionPlan:
    """``auto_partition(module, example)`` on global rank 0, broadcast to all ranks.

    ``strategy`` defaults to the module's trainer's (none outside a Trainer). A failure on rank 0
    is raised on every rank (no rank is left waiting in the broadcast).
    """
    if has_sharded_params(module):
        raise RuntimeError(
            "AdamMini: the module's parameters are already sharded (DTensor), so its plan can't be "
            "traced from them. Add lightning_adam_mini.AdamMiniCallback() to the Trainer (it traces "
            "the plan in `setup`, before `configure_model` shards the model) with "
            "`example_input_array` set, or pass partition= (a plan made before sharding)"
        )
    if strategy is None and module._trainer is not None:
        strategy = module._trainer.strategy
    check_strategy(strategy)
    payload: Any = None
    if strategy is None or strategy.global_rank == 0:
        try:
            args, kwargs = as_call_args(example)
            payload = auto_partition(module, args, kwargs).to_dict()
        except Exception as err:  # re-raised on every rank below
            payload = f"{type(err).__name__}: {err}"
    if strategy is not None:
        payload = strategy.broadcast(payload, src=0)
    if isinstance(payload, str):
        raise RuntimeError(
            f"AdamMini: auto_partition failed on rank 0 ({payload}). Check that the example input "
            "(example_input_array, or AdamMiniCallback(example_input=...)) is what forward() takes, "
            "or pass a pinned plan: partition=<PartitionPlan or YAML path>"
        )
    return PartitionPlan.from_dict(payload)


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
