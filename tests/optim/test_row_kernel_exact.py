"""The one-pass row kernel path and its helpers on hand-written numbers.

``fused=True`` steps follow the float64 reference of DESIGN §1 (``reference_steps``, plain Python)
with block ids written by hand; ``row_blocks`` (which parameters the kernel serves) and the helpers
of the foreach path (row chunks, ``1 - beta**t``) are written out by hand too.
"""

from __future__ import annotations

import warnings
from typing import Any, cast

import pytest
import torch

from lightning_adam_mini import functional
from lightning_adam_mini import row_kernel as rk
from lightning_adam_mini.blocks import BlockReduction
from lightning_adam_mini.sharded import ShardedBlockReduction
from partitioners import BlockLayout, Segment

from .test_block_math_exact import BETAS, EPS, LR, WD, reference_steps, run_adam_mini, values


@pytest.fixture(scope="module")
def row_step():
    op = rk.row_step_op()
    assert op is not None, "the row kernel did not build (a C++ compiler is needed for this test)"
    return op


# ---- row_blocks: blocks as consecutive equal runs of whole rows along dim 0 -------------------
@pytest.mark.parametrize(
    "make_layout, shape, blocks",
    [
        (lambda: BlockLayout.rows(0), (4, 3), 4),
        (lambda: BlockLayout.rows(0), (4, 3, 2), 4),
        (lambda: BlockLayout.rows(0, group=2), (4, 3), 2),
        (lambda: BlockLayout.rows(0, group=4), (4, 3), 1),  # one head: one block
        (lambda: BlockLayout.tensor(), (4, 3), 1),
        (lambda: BlockLayout.tensor(), (5,), 1),
        (lambda: BlockLayout.element(), (5,), 5),  # a bias: one element per row
        (lambda: BlockLayout.segmented([Segment(2, 2), Segment(2, 2)]), (4, 3), 2),
        (lambda: BlockLayout.rows(1), (4, 3), None),
        (lambda: BlockLayout.element(), (4, 3), None),
        (lambda: BlockLayout.segmented([Segment(2, 2), Segment(2, 1)]), (4, 3), None),  # uneven
        (lambda: BlockLayout.segmented([Segment(1, 1), Segment(3, 3)]), (4, 3), None),
        (lambda: BlockLayout.segmented([Segment(2, 2), Segment(1, 1)], repeat=2), (6, 3), None),
        (lambda: BlockLayout.rows(1, batch_axes=(0,)), (2, 3, 4), None),
        (lambda: BlockLayout.rows(0), (0, 3), None),  # empty
        (lambda: BlockLayout.tensor(), (3, 0), None),
    ],
)
def test_row_blocks(make_layout, shape, blocks):
    assert BlockReduction.build(make_layout(), shape, torch.device("cpu")).row_blocks == blocks


# ---- the fused step against the float64 reference ---------------------------------------------
CASES = {  # (layout factory, shape, block of every element in row-major order, by hand)
    "rows0": (lambda: BlockLayout.rows(0), (2, 3), [0, 0, 0, 1, 1, 1]),
    "heads": (lambda: BlockLayout.rows(0, group=2), (4, 2), [0, 0, 0, 0, 1, 1, 1, 1]),
    "tensor": (lambda: BlockLayout.tensor(), (2, 3), [0] * 6),
    "bias": (lambda: BlockLayout.element(), (4,), [0, 1, 2, 3]),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("betas", [(0.5, 0.75), (0.0, 0.75), (0.5, 0.0)])
def test_fused_steps_follow_the_float64_reference(case, betas, row_step, monkeypatch):
    make_layout, shape, block_of = CASES[case]
    calls = []

    def counting(*args):  # (params, grads, m, v, steps, rows per param, lr, ...): lists per param
        calls.append((len(args[0]), list(args[5])))
        row_step(*args)

    monkeypatch.setattr(rk, "row_step_op", lambda: counting)
    n = len(block_of)
    p0, grads = values(n, 1), [values(n, 2), values(n, 3), values(n, 4)]
    got, state = run_adam_mini(make_layout(), shape, p0, grads, dtype=torch.float32, fused=True, betas=betas)
    want, v = reference_steps(p0, grads, block_of, betas=betas)
    if len(shape) == 1:  # no decay for vectors
        want, _ = reference_steps(p0, grads, block_of, betas=betas, wd=0.0)
    blocks = max(block_of) + 1
    assert calls == [(1, [blocks])] * 3  # the kernel ran once per step, the param as `blocks` rows
    torch.testing.assert_close(got.flatten(), torch.tensor(want, dtype=torch.float32), rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(
        state["exp_avg_sq"].flatten(), torch.tensor([v[b] for b in range(blocks)]), rtol=2e-5, atol=0
    )
    assert state["step"].item() == 3


def test_fused_step_leaves_other_layouts_to_the_foreach_path(row_step, monkeypatch):
    """rows along dim 1 (and an fp64 parameter) are not the kernel's: it is never called."""
    calls = []
    monkeypatch.setattr(rk, "row_step_op", lambda: lambda *args: calls.append(args))
    block_of = [0, 1, 2, 0, 1, 2]
    p0, grads = values(6, 1), [values(6, 2), values(6, 3)]
    got, _ = run_adam_mini(BlockLayout.rows(1), (2, 3), p0, grads, dtype=torch.float32, fused=True)
    want, _ = reference_steps(p0, grads, block_of)
    torch.testing.assert_close(got.flatten(), torch.tensor(want, dtype=torch.float32), rtol=2e-5, atol=1e-6)
    got, _ = run_adam_mini(BlockLayout.rows(0), (2, 3), p0, grads, dtype=torch.float64, fused=True)
    want, _ = reference_steps(p0, grads, [0, 0, 0, 1, 1, 1])
    torch.testing.assert_close(got.flatten(), torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=1e-9)
    assert calls == []


@pytest.mark.parametrize(
    "p, g, m",
    [
        (torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 2)),
        (torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 2, dtype=torch.bfloat16)),
    ],
)
def test_fits_the_kernel(p, g, m):
    red = BlockReduction.build(BlockLayout.rows(0), (4, 2), torch.device("cpu"))
    assert functional._fits_row_kernel(red, p, g, m)
    assert not functional._fits_row_kernel(red, p.double(), g.double(), m)
    assert not functional._fits_row_kernel(red, p, g.half(), m)
    assert not functional._fits_row_kernel(red, p, g, m.half())
    assert not functional._fits_row_kernel(red, p.T.contiguous().T, g, m)  # not contiguous
    assert not functional._fits_row_kernel(red, p, g.T.contiguous().T, m)
    assert not functional._fits_row_kernel(red, p, g, m.T.contiguous().T)
    assert not functional._fits_row_kernel(red, p.to("meta"), g, m)
    no_rows = BlockReduction.build(BlockLayout.rows(1), (4, 2), torch.device("cpu"))
    assert not functional._fits_row_kernel(no_rows, p, g, m)
    # an FSDP2 shard's reduction (no row_blocks: its blocks may straddle ranks)
    sharded = ShardedBlockReduction(red, (8, 2), 4, 4, cast(Any, None))
    assert not functional._fits_row_kernel(sharded, p, g, m)


# ---- helpers of the foreach path ---------------------------------------------------------------
def test_row_chunks_split_along_dim0_into_about_numel_elements():
    a, b = torch.arange(32.0).view(8, 4), torch.zeros(8, 4)
    chunks = list(functional._row_chunks(a, b, numel=8))  # 2 rows of 4 per chunk
    assert [tuple(x.shape) for x, _ in chunks] == [(2, 4)] * 4
    assert [x[0, 0].item() for x, _ in chunks] == [0.0, 8.0, 16.0, 24.0]
    assert all(y.shape == (2, 4) for _, y in chunks)
    # rows larger than numel: one row per chunk
    assert [tuple(x.shape) for (x,) in functional._row_chunks(torch.zeros(3, 10), numel=4)] == [(1, 10)] * 3
    # small enough, or 0-d: the tensors themselves
    (whole,) = functional._row_chunks(a, numel=32)
    assert whole[0] is a
    (scalar,) = functional._row_chunks(torch.tensor(1.0), numel=0)
    assert scalar[0].shape == ()
    # the default: 2**18 elements
    assert len(list(functional._row_chunks(torch.zeros(4, 1 << 17)))) == 2
    assert len(list(functional._row_chunks(torch.zeros(4, 1 << 16)))) == 1


def test_one_minus_power_by_hand():
    steps = [torch.tensor(1.0), torch.tensor(3.0)]
    assert [x.item() for x in functional._one_minus_power(0.5, steps)] == [0.5, 0.875]
    assert [x.item() for x in functional._one_minus_power(0.0, steps)] == [1.0, 1.0]
    # close to 1 without cancellation: 1 - 0.999999**2 = 1.999999e-6
    (x,) = functional._one_minus_power(0.999999, [torch.tensor(2.0, dtype=torch.float32)])
    assert x.item() == pytest.approx(1.999999e-6, rel=1e-6)


@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float64), (torch.float64, torch.float32)])
def test_fused_step_goes_on_to_the_next_dtype_group_and_takes_a_tensor_lr_as_is(dtypes, row_step):
    """The kernel serves every fp32 parameter; the fp64 group (before or after it: the groups'
    order is torch's) still takes the foreach step. A tensor ``lr`` reaches the kernel as it is
    (no copy, so no copy-construct warning)."""
    shape, block_of = (2, 3), [0, 0, 0, 1, 1, 1]
    p0, grads = values(6, 1), [values(6, 2), values(6, 3)]
    params = [torch.tensor(p0, dtype=dtype).reshape(shape) for dtype in dtypes]
    exp_avgs = [torch.zeros_like(p) for p in params]
    exp_avg_sqs = [torch.zeros(2, 1, dtype=p.dtype) for p in params]
    steps = [torch.zeros(()), torch.zeros(())]
    reductions = [BlockReduction.build(BlockLayout.rows(0), shape, torch.device("cpu")) for _ in params]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for g in grads:
            functional.adam_mini(
                params,
                [torch.tensor(g, dtype=p.dtype).reshape(shape) for p in params],
                exp_avgs,
                exp_avg_sqs,
                steps,
                reductions,
                [True, True],
                lr=torch.tensor(LR, dtype=torch.float64),
                beta1=BETAS[0],
                beta2=BETAS[1],
                eps=EPS,
                weight_decay=WD,
                row_step=row_step,
            )
    want, _ = reference_steps(p0, grads, block_of)
    for p in params:
        torch.testing.assert_close(
            p.flatten().double(), torch.tensor(want, dtype=torch.float64), rtol=2e-5, atol=1e-6
        )
    assert [s.item() for s in steps] == [2.0, 2.0]
