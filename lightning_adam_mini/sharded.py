"""Adam-mini blocks over FSDP2 shards: DTensor parameters placed ``Shard(0)`` on a 1-D mesh.

Under ``fully_shard`` each rank holds rows ``[offset, offset + length)`` of dim 0 (``torch.chunk``
split: uneven, possibly empty). The update itself runs on the local tensors; only the block
reduction needs to know about the other ranks:

* element-wise layouts (``v`` has the parameter's shape, e.g. biases): ``v`` is sharded exactly
  like the parameter and nothing crosses ranks.
* every other layout: ``v`` is the full per-block tensor, replicated on every rank. Each rank
  sums the squares of its rows into a zero buffer of the *global* per-row shape, one
  ``all_reduce(SUM)`` on the mesh's process group adds the ranks' parts, then the rows are
  grouped into blocks as in the unsharded case. This makes the blocks that straddle a shard
  boundary exact: a head split between two ranks, a whole-tensor block, rows along dim 1 of a
  ``Shard(0)`` tensor, segments.

Why ``v`` is replicated: it is ~0.1% of the parameter (one value per block), every rank needs
the full per-block mean anyway for the straddling blocks, and a plain replicated tensor saves
and reloads through ``torch.distributed.checkpoint`` as is. ``m`` (the big state) is a DTensor
sharded like the parameter, so optimizer state bytes per rank are ~1/world.

Plain tensors never reach this code's collectives: a single process needs no process group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

import torch
import torch.distributed as dist
from torch import Tensor

from partitioners import BlockLayout

from .blocks import BlockReduction, v_dtype

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor, Replicate, Shard
else:
    try:  # DTensor is importable on every supported torch, but keep the plain path import-light.
        from torch.distributed.tensor import DTensor, Replicate, Shard
    except ImportError:  # pragma: no cover
        DTensor = None


def is_sharded(t: Tensor) -> TypeGuard[DTensor]:
    return DTensor is not None and isinstance(t, DTensor)


def local_tensor(t: Tensor) -> Tensor:
    """The rank-local tensor of a DTensor (aliases its storage); a plain tensor as is."""
    return t.to_local() if is_sharded(t) else t


def _local_rows(p: DTensor) -> tuple[int, int]:
    """(offset, length) of this rank's rows along dim 0."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    local_shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    return int(offset[0]), int(local_shape[0])


@dataclass(frozen=True)
class ShardedBlockReduction:
    """:class:`BlockReduction` for a ``Shard(0)`` parameter: takes and returns local tensors."""

    base: BlockReduction  # built for the global shape
    global_shape: tuple[int, ...]
    offset: int
    length: int
    group: dist.ProcessGroup

    @property
    def v_shape(self) -> tuple[int, ...]:
        return self.base.v_shape

    @property
    def is_elementwise(self) -> bool:
        return False

    def local_sums(self, grad: Tensor) -> Tensor:
        """This rank's part of the per-row sums of ``grad**2``, in the global per-row shape
        (zeros for the other ranks' rows); summing it over ranks gives the full per-row sums."""
        base = self.base
        rows_shape = tuple(1 if d in base.reduce_dims else s for d, s in enumerate(self.global_shape))
        sums = torch.zeros(rows_shape, dtype=v_dtype(grad.dtype), device=grad.device)
        if grad.numel():
            target = sums if 0 in base.reduce_dims else sums.narrow(0, self.offset, self.length)
            target.add_(base.row_square_sums(grad))
        return sums

    def from_sums(self, sums: Tensor) -> Tensor:
        """Per-block means (full ``v_shape``) from the all-rank per-row sums."""
        return self.base.group_rows(sums.div_(self.base.row_numel))

    @classmethod
    def mean_squares(
        cls, reductions: Sequence[ShardedBlockReduction], grads: Sequence[Tensor]
    ) -> list[Tensor]:
        """Per-block means of ``grad**2`` (full ``v_shape``) from the local gradients: the ranks'
        per-row sums are added with one ``all_reduce`` per process group and dtype, for all
        parameters at once (the :class:`~.reduction.Reduction` protocol)."""
        sums = [red.local_sums(g) for red, g in zip(reductions, grads)]
        pending: dict[tuple[Any, torch.dtype], list[int]] = {}
        for i, (red, s) in enumerate(zip(reductions, sums)):
            pending.setdefault((red.group, s.dtype), []).append(i)
        out: list[Tensor] = list(sums)
        for (group, _), indices in pending.items():
            flat = torch.cat([sums[i].flatten() for i in indices])
            dist.all_reduce(flat, group=group)
            for i, part in zip(indices, flat.split([sums[i].numel() for i in indices])):
                out[i] = reductions[i].from_sums(part.view_as(sums[i]))
        return out

    def expand(self, x: Tensor) -> Tensor:
        """Broadcast the full ``v``-shaped ``x`` over this rank's rows of the parameter."""
        full = self.base.expand(x)
        if 0 in self.base.reduce_dims:
            return full
        return full.narrow(0, self.offset, self.length)


def build_reduction(layout: BlockLayout, p: Tensor) -> BlockReduction | ShardedBlockReduction:
    """The reduction for ``p``: plain for tensors, replicated DTensors and element-wise layouts
    (built on the local shape), sharded otherwise."""
    if not is_sharded(p):
        return BlockReduction.build(layout, tuple(p.shape), p.device)
    local = p.to_local()
    placements = tuple(p.placements)
    if all(isinstance(pl, Replicate) for pl in placements):
        return BlockReduction.build(layout, tuple(p.shape), local.device)
    if p.device_mesh.ndim != 1 or placements != (Shard(0),):
        raise NotImplementedError(
            f"AdamMini supports DTensor parameters placed Shard(0) on a 1-D mesh (FSDP2's "
            f"fully_shard) or replicated; got placements {placements} on a {p.device_mesh.ndim}-D "
            "mesh. Shard the model with fully_shard on a 1-D data-parallel mesh."
        )
    base = BlockReduction.build(layout, tuple(p.shape), local.device)
    if base.is_elementwise:
        return BlockReduction.build(layout, tuple(local.shape), local.device)
    offset, length = _local_rows(p)
    return ShardedBlockReduction(base, tuple(p.shape), offset, length, p.device_mesh.get_group())


def new_exp_avg_sq(p: Tensor, reduction: BlockReduction | ShardedBlockReduction) -> Tensor:
    """Zero second moment: sharded like ``p`` for element-wise blocks, else a plain ``v_shape`` tensor."""
    dtype = v_dtype(p.dtype)
    if is_sharded(p) and reduction.is_elementwise:
        return torch.zeros_like(p, dtype=dtype)
    return torch.zeros(reduction.v_shape, dtype=dtype, device=local_tensor(p).device)
