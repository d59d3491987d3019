"""The code under test, seen per element: a plan entry's block id for every element."""

from __future__ import annotations

import torch

from partitioners import PlanEntry


def plan_blocks(entry: PlanEntry) -> torch.Tensor:
    """The plan's block id of every element: the code under test, through ``BlockLayout``'s API.

    A layout keeps one second-moment value per block, in a tensor of ``v_shape``; ``row_to_block``
    maps each row along the row axis to its block there, and the reduced axes broadcast.
    """
    layout, shape = entry.layout, entry.shape
    v_shape = layout.v_shape(shape)
    ids = torch.arange(int(torch.Size(v_shape).numel())).reshape(v_shape)
    row_to_block = layout.row_to_block(shape)
    if row_to_block is not None:
        ids = ids.index_select(layout.axis, torch.tensor(row_to_block))
    return ids.expand(shape)
