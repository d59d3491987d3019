"""Adam-mini for PyTorch and Lightning, fed by partitions inferred from the operator graph."""

from partitioners import BlockLayout, PartitionPlan, auto_partition

from .functional import adam_mini
from .optimizer import AdamMini

__all__ = ["AdamMini", "BlockLayout", "PartitionPlan", "adam_mini", "auto_partition"]
