"""`Reduction`: what the update needs to know about one parameter's blocks.

The update (:mod:`.functional`) depends on this protocol only. Two implementations:
:class:`~.blocks.BlockReduction` (a plain tensor) and :class:`~.sharded.ShardedBlockReduction`
(an FSDP2 ``Shard(0)`` parameter, whose blocks may straddle ranks). Each implementation reduces
all of its parameters in one call (:meth:`Reduction.mean_squares`), so that the sharded one can
add the ranks' partial sums with one collective for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from torch import Tensor

if TYPE_CHECKING:
    from typing_extensions import Self


class Reduction(Protocol):
    """Static per-parameter block geometry (built once, reused every step)."""

    @property
    def v_shape(self) -> tuple[int, ...]:
        """Shape of the second moment ``v``: one value per block."""
        ...

    @property
    def is_elementwise(self) -> bool:
        """Whether every element is its own block (``v`` has the parameter's (local) shape)."""
        ...

    def expand(self, x: Tensor) -> Tensor:
        """Broadcast a ``v``-shaped tensor so that it lines up with the (local) parameter."""
        ...

    @classmethod
    def mean_squares(cls, reductions: Sequence[Self], grads: Sequence[Tensor]) -> list[Tensor]:
        """Per-block means of ``grad**2`` (each ``v``-shaped, fp32 or fp64) for parameters that all
        use this implementation; ``grads`` are the (local) gradients, in order."""
        ...


def block_mean_squares(reductions: Sequence[Reduction], grads: Sequence[Tensor]) -> list[Tensor]:
    """``mean_squares`` of every parameter, each implementation called once for all of its own."""
    out: list[Tensor | None] = [None] * len(grads)
    by_kind: dict[type, list[int]] = {}
    for i, red in enumerate(reductions):
        by_kind.setdefault(type(red), []).append(i)
    for kind, indices in by_kind.items():
        results = kind.mean_squares([reductions[i] for i in indices], [grads[i] for i in indices])
        for i, result in zip(indices, results):
            out[i] = result
    return out  # type: ignore[return-value]
