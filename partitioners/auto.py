"""Placeholder: the graph partitioner lands here (issue 4). Until then, the name rules."""

from __future__ import annotations

from typing import Any

from torch import nn

from .names import name_partition
from .plan import PartitionPlan


def auto_partition(
    model: nn.Module,
    example_inputs: tuple[Any, ...] | None = None,
    example_kwargs: dict[str, Any] | None = None,
) -> PartitionPlan:
    return name_partition(model)
