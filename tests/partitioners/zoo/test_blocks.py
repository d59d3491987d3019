"""The zoo's own yardstick: the hand-written block constructors and the partition comparison."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from partitioners import BlockLayout, PlanEntry

from .blocks import (
    describe,
    element,
    experts,
    heads,
    one,
    per_head,
    per_row,
    rows,
    same_partition,
    segments,
    viewed,
    whole,
)
from .case import Built, Case, ExpectationError
from .plan_view import plan_blocks


def test_constructors_label_elements_by_hand():
    assert rows()((3, 2)).tolist() == [[0, 0], [1, 1], [2, 2]]
    assert rows(1)((2, 3)).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert heads(2)((4, 1)).flatten().tolist() == [0, 0, 1, 1]
    assert whole()((2, 2)).unique().tolist() == [0]
    assert element()((2, 2)).flatten().tolist() == [0, 1, 2, 3]
    # q (2 heads of 2) | k (1 head of 2) | v (2 rows), tiled twice
    qkv = segments(per_head(2, 2), one(2), per_row(2), repeat=2)((16, 1)).flatten().tolist()
    assert qkv == [0, 0, 1, 1, 2, 2, 3, 4, 5, 5, 6, 6, 7, 7, 8, 9]
    assert experts(axis=1)((2, 3, 4)).unique().numel() == 6
    assert experts(axis=1)((2, 3, 4))[1, 2].unique().numel() == 1
    # (E*F, D) stored flat, used per expert as (F, D) with outputs along D: block (e, d)
    flat = viewed((2, 3, 4), experts(axis=2))((6, 4))
    assert flat[:3, 1].unique().numel() == 1 and flat[:, 1].unique().numel() == 2
    assert flat.unique().numel() == 8


def test_same_partition_ignores_ids_but_not_grouping():
    a = torch.tensor([0, 0, 1, 1])
    assert same_partition(a, torch.tensor([7, 7, 3, 3]))
    assert not same_partition(a, torch.tensor([0, 0, 0, 0]))  # coarser
    assert not same_partition(a, torch.tensor([0, 1, 2, 3]))  # finer
    assert not same_partition(a, torch.tensor([0, 1, 0, 1]))  # same sizes, other grouping
    assert not same_partition(a, a.reshape(2, 2))
    assert describe(torch.tensor([0, 0, 1, 2])) == "3 blocks: 1x2 + 2x1"


def test_plan_blocks_reads_every_layout_kind():
    def blocks(layout: BlockLayout, shape: tuple[int, ...]) -> torch.Tensor:
        return plan_blocks(PlanEntry(shape, "x", layout))

    shape = (6, 4)
    assert same_partition(blocks(BlockLayout.rows(0), shape), rows()(shape))
    assert same_partition(blocks(BlockLayout.rows(1), shape), rows(1)(shape))
    assert same_partition(blocks(BlockLayout.rows(0, group=2), shape), heads(2)(shape))
    assert not same_partition(blocks(BlockLayout.rows(0, group=3), shape), heads(2)(shape))
    assert same_partition(blocks(BlockLayout.tensor(), shape), whole()(shape))
    assert same_partition(blocks(BlockLayout.element(), shape), element()(shape))
    fused = BlockLayout.segmented([(2, 2), (1, 1)], repeat=2)
    assert same_partition(blocks(fused, shape), segments(one(2), per_row(1), repeat=2)(shape))
    # two spellings of one partition are equal: a segment of one block == a group of its size
    assert same_partition(blocks(BlockLayout.segmented([(3, 3), (3, 3)]), shape), heads(3)(shape))
    e = (3, 4, 2)
    assert same_partition(blocks(BlockLayout.rows(1, batch_axes=(0,)), e), experts(axis=1)(e))
    assert not same_partition(blocks(BlockLayout.rows(1), e), experts(axis=1)(e))


def test_an_expectation_must_cover_every_parameter_and_use_every_pattern():
    def case(expect) -> Case:
        return Case("linear", "torch", lambda: Built(nn.Linear(4, 6), (torch.randn(1, 4),)), expect)

    model = nn.Linear(4, 6)
    assert set(case({"weight": rows(), "bias": element()}).expected(model)) == {"weight", "bias"}
    with pytest.raises(ExpectationError, match="no expectation written for parameter 'bias'"):
        case({"weight": rows()}).expected(model)
    with pytest.raises(ExpectationError, match="match no parameter"):
        case({"weight": rows(), "bias": element(), "*.wieght": whole()}).expected(model)
    with pytest.raises(ExpectationError, match="whole heads"):
        case({"weight": heads(4), "bias": element()}).expected(model)
