"""Model -> :class:`PartitionPlan`: which Adam-mini block each parameter element belongs to.

Depends on torch (and pyyaml) only. See ``PartitionPlan`` for the data, ``auto_partition`` for
the graph partitioner, ``apply_overrides`` for rules on top, and ``name_partition`` for the
official name rules.

Pipeline of ``auto_partition``: ``trace`` (a meta copy through ``torch.export``) ->
``read_graph`` (containment per submodule) -> ``uses`` / ``row_flow`` / ``attention`` (how each
weight is consumed, its rows followed to the attention sites; op vocabulary in ``ops``) ->
``graph_roles`` (roles and layouts) -> ``plan`` (the data), with ``structure`` and ``names`` as
fallbacks.
"""

from .auto import PartitionWarning, auto_partition
from .layout import BlockLayout, Segment
from .names import name_partition
from .overrides import Rule, apply_overrides
from .plan import PartitionPlan, PlanEntry, PlanMismatchError, load_plan

__all__ = [
    "BlockLayout",
    "PartitionPlan",
    "PartitionWarning",
    "PlanEntry",
    "PlanMismatchError",
    "Rule",
    "Segment",
    "apply_overrides",
    "auto_partition",
    "load_plan",
    "name_partition",
]
