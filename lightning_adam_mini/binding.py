"""How an optimizer gets its plan and its parameter names: the one path every caller takes.

:func:`resolve_plan` is the only way a plan is made for an optimizer: by ``AdamMini`` itself (from
the model, at ``bind()``, or from the forward it saw, see :mod:`.owner`), by the Lightning callback
and helper, and by the app. :func:`name_param_groups` names bare tensors after a module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from partitioners import PartitionPlan, auto_partition, load_plan
from partitioners.param_names import first_names


def resolve_plan(
    module: nn.Module | None,
    partition: PartitionPlan | str | os.PathLike | None = None,
    example_inputs: tuple[Any, ...] | None = None,
    example_kwargs: dict[str, Any] | None = None,
    *,
    strategy: Any = None,
) -> PartitionPlan:
    """``partition`` as given (a plan, or a YAML path), else ``auto_partition(module, ...)``.

    With a ``strategy`` (Lightning's or Fabric's: ``global_rank`` and ``broadcast``) the module is
    traced on global rank 0 only and the plan broadcast, so every rank holds the identical plan;
    a failure on rank 0 is raised on every rank (no rank is left waiting in the broadcast).
    """
    if partition is not None:
        return load_plan(Path(partition) if isinstance(partition, os.PathLike) else partition)
    if module is None:
        raise ValueError("resolve_plan: give a module to trace, or partition=")
    from .sharded import is_sharded

    if any(is_sharded(p) for p in module.parameters()):
        raise RuntimeError(
            "AdamMini: the module's parameters are already sharded (DTensor), so its plan can't be "
            "traced from them. Trace it before sharding: in Lightning add "
            "lightning_adam_mini.AdamMiniCallback() with `example_input_array` set (it traces in "
            "`setup`, before `configure_model`), or pass partition= (a plan made before sharding)"
        )
    if strategy is None:
        return auto_partition(module, example_inputs, example_kwargs)
    payload: Any = None
    if strategy.global_rank == 0:
        try:
            payload = auto_partition(module, example_inputs, example_kwargs).to_dict()
        except Exception as err:  # re-raised on every rank below
            payload = f"{type(err).__name__}: {err}"
    payload = strategy.broadcast(payload, src=0)
    if isinstance(payload, str):
        raise RuntimeError(
            f"AdamMini: auto_partition failed on rank 0 ({payload}). Check that the example input "
            "(example_input_array, or AdamMiniCallback(example_input=...)) is what forward() takes, "
            "or pass a pinned plan: partition=<PartitionPlan or YAML path>"
        )
    return PartitionPlan.from_dict(payload)


def name_param_groups(param_groups: list[dict[str, Any]], module: nn.Module) -> list[tuple[str, Tensor]]:
    """Set ``group["param_names"]`` for every group from ``module``; return all (name, param) pairs.

    Raises ``ValueError`` naming the first tensor that is not one of ``module``'s parameters.
    """
    names = first_names(module)
    resolved = []
    for group in param_groups:
        group_names = []
        for i, p in enumerate(group["params"]):
            name = names.get(id(p))
            if name is None:
                raise ValueError(
                    f"AdamMini.bind: tensor #{i} {tuple(p.shape)} of a param group is not a parameter "
                    f"of {type(module).__name__}. Bind to the module whose parameters built the "
                    "optimizer; if the module's parameters were replaced after the optimizer was made "
                    "(e.g. fully_shard in configure_model), build it in configure_optimizers instead, "
                    "e.g. `return adam_mini_optimizers(self)`"
                )
            group_names.append(name)
        group["param_names"] = group_names
        resolved.extend(zip(group_names, group["params"]))
    return resolved
