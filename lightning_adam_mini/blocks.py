"""`BlockReduction`: turns a plan's layout into the two tensor ops the update needs (the
:class:`~.reduction.Reduction` protocol for a plain tensor).

For one parameter, ``mean_square(grad)`` gives the per-block mean of ``grad**2`` in the shape of
its second moment ``v`` (fp32), and ``expand(x)`` broadcasts a ``v``-shaped tensor back over the
parameter. Rows of equal size make a block's mean the mean of its rows' means, so the reduction
is one sum of squares over the reduced axes, then (only for grouped rows) an ``index_add`` of
the few row values into their blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from partitioners import BlockLayout

# Eager, a larger gradient reduced across its rows is squared by chunks along dim 0 (a 1 MiB fp32
# temporary at most).
SQUARE_CHUNK_NUMEL = 1 << 18


def v_dtype(param_dtype: torch.dtype) -> torch.dtype:
    """The second moment's dtype: fp32 (fp64 only for fp64 params)."""
    return torch.promote_types(param_dtype, torch.float32)


@dataclass(frozen=True)
class BlockReduction:
    """Static per-parameter description of its blocks (built once, reused every step)."""

    v_shape: tuple[int, ...]
    reduce_dims: tuple[int, ...]  # axes averaged inside a row; () for per-element
    row_numel: int  # elements per row (product of the reduced axes), at least 1: an empty row's mean is 0
    axis: int  # the row axis (grouping axis)
    row_to_block: Tensor | None  # int64 [rows] block of each row, None when one block per row
    rows_per_block: Tensor | None  # fp32, v-shaped broadcast along `axis`
    # Blocks as consecutive equal runs of whole rows along dim 0: their count (the row kernel
    # views the parameter as [row_blocks, -1]); None for any other geometry.
    row_blocks: int | None = None

    @classmethod
    def build(cls, layout: BlockLayout, shape: tuple[int, ...], device: torch.device) -> BlockReduction:
        layout.check(shape)
        dims = layout.reduce_dims(len(shape))
        index = layout.row_to_block(shape)
        v_shape = layout.v_shape(shape)
        if index is not None and v_shape[layout.axis] == 1:
            # All rows form one block: reduce the row axis too (no index ops; Inductor's CPU
            # codegen fails on an index_add into a size-1 axis, e.g. a single kv head).
            dims, index = tuple(sorted((*dims, layout.axis))), None
        row_to_block = rows_per_block = None
        if index is not None:
            row_to_block = torch.tensor(index, dtype=torch.long, device=device)
            counts = torch.bincount(row_to_block, minlength=v_shape[layout.axis]).float()
            view = [1] * len(shape)
            view[layout.axis] = -1
            rows_per_block = counts.view(view)
        return cls(
            row_blocks=_row_blocks(shape, dims, index, v_shape),
            v_shape=v_shape,
            reduce_dims=dims,
            row_numel=max(1, math.prod(shape[d] for d in dims)),
            axis=layout.axis,
            row_to_block=row_to_block,
            rows_per_block=rows_per_block,
        )

    @property
    def is_elementwise(self) -> bool:
        return not self.reduce_dims and self.row_to_block is None

    def row_square_sums(self, grad: Tensor) -> Tensor:
        """Per-row sums of ``grad**2``, reduced axes kept as size 1 (fp32, or fp64 for fp64 grads)."""
        dtype = v_dtype(grad.dtype)
        if not self.reduce_dims:
            return grad.to(dtype).square()
        if grad.ndim - 1 in self.reduce_dims:  # along the last axis: vector_norm vectorizes
            return torch.linalg.vector_norm(
                grad, 2, dim=self.reduce_dims, keepdim=True, dtype=dtype
            ).square_()
        # Across rows (e.g. rows on dim 1), vector_norm goes element by element on CPU (10-25x
        # slower); squaring then summing vectorizes. Compiled, the two fuse into one loop; eager, a
        # large gradient is squared by chunks along dim 0 so that the temporary stays small.
        if grad.numel() <= SQUARE_CHUNK_NUMEL or torch.compiler.is_compiling():
            return grad.to(dtype).square().sum(self.reduce_dims, keepdim=True)
        rows = max(1, SQUARE_CHUNK_NUMEL * grad.shape[0] // grad.numel())
        parts = torch.cat(
            [c.to(dtype).square().sum(self.reduce_dims, keepdim=True) for c in grad.split(rows)]
        )
        return parts.sum(0, keepdim=True) if 0 in self.reduce_dims else parts

    def mean_square(self, grad: Tensor) -> Tensor:
        """Per-block mean of ``grad**2`` (shape ``v_shape``; fp32, or fp64 for fp64 grads)."""
        row = self.row_square_sums(grad)
        if self.reduce_dims:
            row.div_(self.row_numel)
        return self.group_rows(row)

    def group_rows(self, row: Tensor) -> Tensor:
        """Per-row means (reduced axes kept as size 1) -> per-block means of shape ``v_shape``."""
        if self.row_to_block is None:
            return row.reshape(self.v_shape)
        assert self.rows_per_block is not None  # built together with row_to_block
        summed = row.new_zeros(self.v_shape).index_add_(self.axis, self.row_to_block, row)
        return summed.div_(self.rows_per_block)

    @classmethod
    def mean_squares(cls, reductions: Sequence[BlockReduction], grads: Sequence[Tensor]) -> list[Tensor]:
        """:meth:`mean_square` of each parameter (the :class:`~.reduction.Reduction` protocol)."""
        return [red.mean_square(g) for red, g in zip(reductions, grads)]

    def expand(self, x: Tensor) -> Tensor:
        """Broadcast a ``v``-shaped tensor so that it lines up with the parameter."""
        if self.row_to_block is None:
            return x
        return x.index_select(self.axis, self.row_to_block)


def _row_blocks(
    shape: tuple[int, ...], dims: tuple[int, ...], index: Sequence[int] | None, v_shape: tuple[int, ...]
) -> int | None:
    """How many blocks, if the blocks are consecutive equal runs of whole rows along dim 0."""
    if not shape or 0 in shape:
        return None
    if dims == tuple(range(len(shape))):
        return 1
    if dims != tuple(range(1, len(shape))):
        return None
    if index is None:
        return shape[0]
    blocks = v_shape[0]
    group = shape[0] // blocks
    if list(index) != [r // group for r in range(shape[0])]:
        return None
    return blocks
