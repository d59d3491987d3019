"""Block math against a naive reference: explicit block ids per element, per-block loops."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_adam_mini import AdamMini
from lightning_adam_mini.blocks import BlockReduction
from lightning_adam_mini.stats import step_size_stats
from partitioners import BlockLayout, PartitionPlan, PlanEntry, Segment


def naive_block_ids(layout: BlockLayout, shape) -> torch.Tensor:
    """Block id of every element, by walking the layout's definition element by element."""
    ids = torch.empty(shape, dtype=torch.long)
    if layout.kind == "rows":
        row_block, first = [], 0
        pattern = layout.segments or (Segment(shape[layout.axis], layout.group),)
        for _ in range(layout.repeat if layout.segments else 1):
            for seg in pattern:
                for r in range(seg.length):
                    row_block.append(first + r // seg.block)
                first += seg.length // seg.block
    for n, idx in enumerate(itertools.product(*map(range, shape))):
        if layout.kind == "tensor":
            ids[idx] = 0
        elif layout.kind == "element":
            ids[idx] = n
        else:
            b = row_block[idx[layout.axis]]
            for a in layout.batch_axes:
                b = b * shape[a] + idx[a]
            ids[idx] = b
    return ids


def naive_adam_mini(p, g, m, v, t, ids, lr, b1, b2, eps, wd):
    """DESIGN §1 with explicit loops over blocks; v is a dict block id -> value."""
    if p.ndim >= 2:
        p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g
    out = p.clone()
    for b in ids.unique().tolist():
        mask = ids == b
        v[b] = b2 * v.get(b, 0.0) + (1 - b2) * (g[mask].double() ** 2).mean().item()
        denom = (v[b] / (1 - b2**t)) ** 0.5 + eps
        out[mask] = p[mask] - lr / (1 - b1**t) * m[mask] / denom
    return out, m


@st.composite
def layouts(draw):
    ndim = draw(st.integers(1, 3))
    shape = [draw(st.integers(1, 4)) for _ in range(ndim)]
    kind = draw(st.sampled_from(["tensor", "element", "rows", "heads", "segments"]))
    if kind in ("tensor", "element"):
        return getattr(BlockLayout, kind)(), tuple(shape)
    axis = draw(st.integers(0, ndim - 1))
    batch = tuple(a for a in range(ndim) if a != axis and draw(st.booleans()))
    if kind == "rows":
        return BlockLayout.rows(axis, batch_axes=batch), tuple(shape)
    if kind == "heads":
        group = draw(st.integers(1, 3))
        shape[axis] = group * draw(st.integers(1, 3))
        return BlockLayout.rows(axis, group=group, batch_axes=batch), tuple(shape)
    segs = [
        Segment(b * draw(st.integers(1, 2)), b)
        for b in draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    ]
    repeat = draw(st.integers(1, 2))
    shape[axis] = repeat * sum(s.length for s in segs)
    return BlockLayout.segmented(segs, axis=axis, repeat=repeat, batch_axes=batch), tuple(shape)


@settings(max_examples=60, deadline=None)
@given(layouts(), st.integers(0, 2**16))
def test_mean_square_matches_naive(layout_shape, seed):
    layout, shape = layout_shape
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    red = BlockReduction.build(layout, shape, torch.device("cpu"))
    got = red.expand(red.mean_square(g)).expand(shape).double()
    ids = naive_block_ids(layout, shape)
    want = torch.empty(shape, dtype=torch.float64)
    for b in ids.unique():
        want[ids == b] = (g[ids == b] ** 2).mean()
    assert ids.unique().numel() == layout.num_blocks(shape) == red.mean_square(g).numel()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(layouts(), st.integers(0, 2**16))
def test_three_steps_match_naive_reference(layout_shape, seed):
    layout, shape = layout_shape
    gen = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(shape, generator=gen))
    plan = PartitionPlan({"w": PlanEntry(shape, "linear", layout)})
    lr, (b1, b2), eps, wd = 0.05, (0.8, 0.9), 1e-8, 0.3
    opt = AdamMini([("w", p)], partition=plan, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    ref_p, ref_m, ref_v = p.detach().double().clone(), torch.zeros(shape, dtype=torch.float64), {}
    ids = naive_block_ids(layout, shape)
    for t in range(1, 4):
        g = torch.randn(shape, generator=gen)
        p.grad = g.clone()
        opt.step()
        ref_p, ref_m = naive_adam_mini(ref_p, g.double(), ref_m, ref_v, t, ids, lr, b1, b2, eps, wd)
    torch.testing.assert_close(p.detach().double(), ref_p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("layout", "shape", "compile"),
    [
        (BlockLayout.tensor(), (0,), False),
        (BlockLayout.rows(0), (3, 0), False),  # three rows of no elements
        (BlockLayout.rows(0), (3, 0), True),
        (BlockLayout.rows(0), (0, 4), False),  # no rows
        (BlockLayout.rows(1), (0, 2), False),
        (BlockLayout.element(), (0, 5), False),
    ],
)
def test_zero_size_parameter_keeps_v_zero_and_leaves_others_alone(layout, shape, compile):
    """A block without elements has mean square 0 (not 0/0 = NaN); its neighbour steps normally."""
    plan = PartitionPlan(
        {
            "empty": PlanEntry(shape, "linear", layout),
            "w": PlanEntry((2, 2), "linear", BlockLayout.tensor()),
        }
    )
    empty, w = torch.nn.Parameter(torch.zeros(shape)), torch.nn.Parameter(torch.ones(2, 2))
    opt = AdamMini([("empty", empty), ("w", w)], partition=plan, lr=0.1, compile=compile)
    empty.grad, w.grad = torch.zeros(shape), torch.full((2, 2), 3.0)
    opt.step()
    v = opt.state[empty]["exp_avg_sq"]
    assert not v.isnan().any(), v
    assert torch.equal(v, torch.zeros_like(v))
    torch.testing.assert_close(w.detach(), torch.full((2, 2), 0.9), rtol=0, atol=1e-6)
    assert all(math.isfinite(x) for x in step_size_stats(opt).values())
