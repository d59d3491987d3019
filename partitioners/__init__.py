"""Model -> :class:`PartitionPlan`: which Adam-mini block each parameter element belongs to.

Depends on torch only. See ``PartitionPlan`` for the data, ``auto_partition`` for the graph
partitioner and ``name_partition`` for the official name rules.
"""

from .auto import auto_partition
from .layout import BlockLayout, Segment
from .names import name_partition
from .plan import PartitionPlan, PlanEntry, PlanMismatchError

__all__ = [
    "BlockLayout",
    "PartitionPlan",
    "PlanEntry",
    "PlanMismatchError",
    "Segment",
    "auto_partition",
    "name_partition",
]
