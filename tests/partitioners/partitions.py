"""Test-side reading of a layout as a partition of a tensor's elements.

Written apart from ``partitioners.layout`` (no ``row_to_block``) so that a test comparing a plan
with a hand-written layout compares partitions of the elements, not two spellings of one.
"""

from __future__ import annotations

import math

import torch

from partitioners import BlockLayout, PartitionPlan


def _row_ids(layout: BlockLayout, n_rows: int) -> list[int]:
    if not layout.segments:
        return [r // layout.group for r in range(n_rows)]
    ids, block = [], 0
    for _ in range(layout.repeat):
        for seg in layout.segments:
            for r in range(seg.length):
                ids.append(block + r // seg.block)
            block += seg.length // seg.block
    return ids


def element_blocks(layout: BlockLayout, shape: tuple[int, ...]) -> torch.Tensor:
    """Block number of every element, renumbered in order of first appearance."""
    if layout.kind == "tensor":
        ids = torch.zeros(shape, dtype=torch.long)
    elif layout.kind == "element":
        ids = torch.arange(math.prod(shape)).view(shape)
    else:
        rows = torch.tensor(_row_ids(layout, shape[layout.axis]))
        index = torch.meshgrid(*(torch.arange(s) for s in shape), indexing="ij")
        ids = rows[index[layout.axis]]
        for axis in layout.batch_axes:
            ids = ids + index[axis] * (int(rows.max()) + 1) * 10**6
    flat = ids.flatten().tolist()
    first: dict[int, int] = {}
    return torch.tensor([first.setdefault(i, len(first)) for i in flat]).view(shape)


def mismatches(plan: PartitionPlan, expected: dict[str, BlockLayout]) -> dict[str, str]:
    """Parameters whose planned blocks differ from the expected ones (as element partitions)."""
    out = {}
    for name, want in expected.items():
        entry = plan[name]
        if not torch.equal(element_blocks(entry.layout, entry.shape), element_blocks(want, entry.shape)):
            out[name] = f"got {entry.layout} ({entry.role}, {entry.decided_by}), want {want}"
    return out
