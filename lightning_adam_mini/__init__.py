"""Adam-mini for PyTorch and Lightning, fed by partitions inferred from the operator graph."""

from partitioners import BlockLayout, PartitionPlan, auto_partition

from .functional import adam_mini
from .optimizer import AdamMini
from .lightning import AdamMiniCallback, adam_mini_optimizers

__all__ = [
    "AdamMini",
    "AdamMiniCallback",
    "BlockLayout",
    "PartitionPlan",
    "adam_mini",
    "adam_mini_optimizers",
    "auto_partition",
]
