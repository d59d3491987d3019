"""Adam-mini for PyTorch and Lightning, fed by partitions inferred from the operator graph.

Layout: ``optimizer`` (the thin ``AdamMini`` class) -> ``functional`` (the update as a pure
function) over a ``reduction.Reduction`` per parameter (``blocks`` plain, ``sharded`` FSDP2);
``binding``/``owner`` give bare parameters their names and plan; ``lightning`` and ``app`` are
adapters, imported only when used. See CONTRIBUTING.md for what each file owns.
"""

from typing import TYPE_CHECKING

from partitioners import BlockLayout, PartitionPlan, auto_partition

from .functional import adam_mini
from .optimizer import AdamMini, decay_matrices

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports them lazily
    from .lightning import AdamMiniCallback, adam_mini_optimizers

_LIGHTNING_EXPORTS = ("AdamMiniCallback", "adam_mini_optimizers")


def __getattr__(name: str):
    # The Lightning adapters import lightning.pytorch (seconds): only when asked for.
    if name in _LIGHTNING_EXPORTS:
        from . import lightning

        return getattr(lightning, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AdamMini",
    "AdamMiniCallback",
    "BlockLayout",
    "PartitionPlan",
    "adam_mini",
    "adam_mini_optimizers",
    "auto_partition",
    "decay_matrices",
]
