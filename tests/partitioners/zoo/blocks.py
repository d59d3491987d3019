"""Expected blocks, written by hand: for a parameter's shape, the block id of every element.

These constructors are deliberately independent of ``partitioners``' layout code (they only
compute integer labels), so that a zoo expectation can't inherit a bug from the code under test.
Two labelings are compared as *partitions*: equal when they group the elements the same way,
whatever the ids or the layout spelling.

    whole()                         one block for the tensor (norm scale, learned scalar)
    element()                       one block per element (bias: plain Adam)
    rows(axis=0)                    one block per index along ``axis`` (output neuron, token row)
    heads(head_dim, axis=0)         one block per ``head_dim`` consecutive indices (q/k heads)
    segments(*parts, axis, repeat)  consecutive stretches along ``axis``, each grouped its own way:
                                    per_head(n, head_dim), per_row(n), one(n); ``repeat`` tiles them
    experts(axis=1, expert_axis=0)  one block per (expert, output neuron) of a 3-D expert weight
    viewed(shape, blocks)           ``blocks`` of the tensor viewed as ``shape`` (experts stored flat)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch

#: A function from a parameter's shape to a tensor of that shape holding each element's block id.
Blocks = Callable[[tuple[int, ...]], torch.Tensor]
#: ``(length, rows_per_block)``: a stretch of rows along the row axis.
Part = tuple[int, int]


def whole() -> Blocks:
    return lambda shape: torch.zeros(shape, dtype=torch.long)


def element() -> Blocks:
    return lambda shape: torch.arange(_numel(shape)).reshape(shape)


def rows(axis: int = 0) -> Blocks:
    return _along(axis, lambda n: list(range(n)))


def heads(head_dim: int, axis: int = 0) -> Blocks:
    def row_ids(n: int) -> list[int]:
        if n % head_dim:
            raise ValueError(f"{n} rows are not whole heads of {head_dim}")
        return [i // head_dim for i in range(n)]

    return _along(axis, row_ids)


def per_head(n_heads: int, head_dim: int) -> Part:
    return (n_heads * head_dim, head_dim)


def per_row(n: int) -> Part:
    return (n, 1)


def one(n: int) -> Part:
    return (n, n)


def segments(*parts: Part, axis: int = 0, repeat: int = 1) -> Blocks:
    def row_ids(n: int) -> list[int]:
        ids: list[int] = []
        for _ in range(repeat):
            for length, size in parts:
                start = len(set(ids))
                ids += [start + i // size for i in range(length)]
        if len(ids) != n:
            raise ValueError(f"segments cover {len(ids)} rows, the tensor has {n}")
        return ids

    return _along(axis, row_ids)


def experts(axis: int = 1, expert_axis: int = 0) -> Blocks:
    def blocks(shape: tuple[int, ...]) -> torch.Tensor:
        row = rows(axis)(shape)
        expert = rows(expert_axis)(shape)
        return expert * shape[axis] + row

    return blocks


def viewed(view: tuple[int, ...], blocks: Blocks) -> Blocks:
    def blocks_of(shape: tuple[int, ...]) -> torch.Tensor:
        if _numel(view) != _numel(shape):
            raise ValueError(f"can't view {shape} as {view}")
        return blocks(view).reshape(shape)

    return blocks_of


def _numel(shape: Sequence[int]) -> int:
    return int(torch.Size(shape).numel())


def _along(axis: int, row_ids: Callable[[int], list[int]]) -> Blocks:
    def blocks(shape: tuple[int, ...]) -> torch.Tensor:
        n = shape[axis]
        view = [1] * len(shape)
        view[axis] = n
        return torch.tensor(row_ids(n), dtype=torch.long).reshape(view).expand(shape).clone()

    return blocks


# ---- comparing partitions --------------------------------------------------------------------
def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when labelings ``a`` and ``b`` group the elements identically (ids may differ)."""
    if a.shape != b.shape:
        return False
    a, b = a.flatten(), b.flatten()
    pairs = a * (int(b.max()) + 1 if b.numel() else 1) + b
    n_pairs = torch.unique(pairs).numel()
    return torch.unique(a).numel() == n_pairs == torch.unique(b).numel()


def describe(ids: torch.Tensor) -> str:
    """``'4 blocks: 4x256'``: the number of blocks and how many blocks have each size."""
    sizes = Counter(torch.unique(ids.flatten(), return_counts=True)[1].tolist())
    parts = " + ".join(f"{count}x{size}" for size, count in sorted(sizes.items(), reverse=True))
    return f"{sum(sizes.values())} blocks: {parts}"
