"""The Adam-mini step on hand-written numbers: block ids written out by hand, expectations computed
in float64 by DESIGN §1 (python loops, no code from the package), large hyperparameters so that
every term of the update (bias corrections, eps, decay, betas) moves the result visibly."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from lightning_adam_mini import AdamMini
from lightning_adam_mini.blocks import BlockReduction, v_dtype
from partitioners import BlockLayout, PartitionPlan, PlanEntry

LR, BETAS, EPS, WD = 0.1, (0.5, 0.75), 0.01, 0.2


def reference_steps(p0, grads, block_of, lr=LR, betas=BETAS, eps=EPS, wd=WD):
    """DESIGN §1 on nested Python floats: ``block_of[i]`` is element i's block (flat order)."""
    b1, b2 = betas
    p, m, v = list(p0), [0.0] * len(p0), {}
    decay = 1 - lr * wd
    for t, g in enumerate(grads, start=1):
        for b in set(block_of):
            members = [i for i, bb in enumerate(block_of) if bb == b]
            v[b] = b2 * v.get(b, 0.0) + (1 - b2) * sum(g[i] ** 2 for i in members) / len(members)
        for i in range(len(p)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            denom = math.sqrt(v[block_of[i]] / (1 - b2**t)) + eps
            p[i] = p[i] * decay - lr / (1 - b1**t) * m[i] / denom
    return p, v


def run_adam_mini(layout, shape, p0, grads, dtype=torch.float64, **hyper):
    p = torch.nn.Parameter(torch.tensor(p0, dtype=dtype).reshape(shape))
    plan = PartitionPlan({"w": PlanEntry(shape, "linear", layout)})
    kw: dict[str, Any] = {"lr": LR, "betas": BETAS, "eps": EPS, "weight_decay": WD, **hyper}
    opt = AdamMini([("w", p)], partition=plan, **kw)
    for g in grads:
        p.grad = torch.tensor(g, dtype=dtype).reshape(shape)
        opt.step()
    return p.detach(), opt.state[p]


def values(n: int, seed: int) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen, dtype=torch.float64).tolist()


# (layout factory, shape, block of every element in row-major order, written out by hand); layouts
# are built inside the tests, where mutmut attributes the constructor calls to them
CASES = {
    "tensor": (lambda: BlockLayout.tensor(), (2, 3), [0, 0, 0, 0, 0, 0]),
    "element": (lambda: BlockLayout.element(), (2, 3), [0, 1, 2, 3, 4, 5]),
    "rows0": (lambda: BlockLayout.rows(0), (2, 3), [0, 0, 0, 1, 1, 1]),
    "rows1": (lambda: BlockLayout.rows(1), (2, 3), [0, 1, 2, 0, 1, 2]),
    "heads": (lambda: BlockLayout.rows(0, group=2), (4, 2), [0, 0, 0, 0, 1, 1, 1, 1]),
    "one_head": (lambda: BlockLayout.rows(0, group=3), (3, 2), [0, 0, 0, 0, 0, 0]),
    # fused q(2 rows, one head) | v(1 row per block), tiled twice along dim 1
    "segments_dim1": (
        lambda: BlockLayout.segmented([(2, 2, "q"), (1, 1, "v")], axis=1, repeat=2),
        (2, 6),
        [0, 0, 1, 2, 2, 3, 0, 0, 1, 2, 2, 3],
    ),
    "uneven_segments": (
        lambda: BlockLayout.segmented([(1, 1), (3, 3)]),
        (4, 2),
        [0, 0, 1, 1, 1, 1, 1, 1],
    ),
    # (experts=2, out=2, in=2): one block per (expert, output row)
    "experts": (lambda: BlockLayout.rows(1, batch_axes=(0,)), (2, 2, 2), [0, 0, 1, 1, 2, 2, 3, 3]),
    "vector_tensor": (lambda: BlockLayout.tensor(), (4,), [0, 0, 0, 0]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_three_steps_follow_the_float64_reference(case):
    make_layout, shape, block_of = CASES[case]
    layout = make_layout()
    n = math.prod(shape)
    p0, grads = values(n, 0), [values(n, s) for s in (1, 2, 3)]
    got, state = run_adam_mini(layout, shape, p0, grads)
    wd = WD if len(shape) >= 2 else 0.0  # decay only for >= 2-D params
    want_p, want_v = reference_steps(p0, grads, block_of, wd=wd)
    torch.testing.assert_close(got.flatten(), torch.tensor(want_p, dtype=torch.float64), rtol=1e-6, atol=1e-9)
    v = state["exp_avg_sq"]
    assert v.numel() == len(want_v) and v.dtype == torch.float64
    torch.testing.assert_close(
        v.flatten(),
        torch.tensor([want_v[b] for b in range(len(want_v))], dtype=torch.float64),
        rtol=1e-12,
        atol=0,
    )
    assert state["step"].item() == 3


def test_one_step_by_hand():
    """Two heads of two rows; step 1 with betas (0.5, 0.75): bias corrections cancel (1-b)."""
    g = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    p0 = [[1.0] * 3, [2.0] * 3, [3.0] * 3, [4.0] * 3]
    got, state = run_adam_mini(
        BlockLayout.rows(0, group=2), (4, 3), [x for row in p0 for x in row], [[x for row in g for x in row]]
    )
    mean_sq = [91 / 6, 3 / 6]  # (1+4+9+16+25+36)/6 and (0+0+0+1+1+1)/6
    assert state["exp_avg_sq"].shape == (2, 1)
    assert state["exp_avg_sq"].flatten().tolist() == pytest.approx(
        [0.25 * mean_sq[0], 0.25 * mean_sq[1]], rel=1e-12
    )
    want = [
        [p0[r][c] * (1 - LR * WD) - LR * g[r][c] / (math.sqrt(mean_sq[r // 2]) + EPS) for c in range(3)]
        for r in range(4)
    ]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(state["exp_avg"], 0.5 * torch.tensor(g, dtype=torch.float64))


@pytest.mark.parametrize("betas", [(0.0, 0.75), (0.5, 0.0), (0.0, 0.0)])
def test_zero_betas(betas):
    """beta = 0: m is the last gradient, v the last block mean, both bias corrections are 1."""
    make_layout, shape, block_of = CASES["heads"]
    layout = make_layout()
    p0, grads = values(8, 4), [values(8, 5), values(8, 6)]
    got, _ = run_adam_mini(layout, shape, p0, grads, betas=betas)
    want, _ = reference_steps(p0, grads, block_of, betas=betas)
    torch.testing.assert_close(got.flatten(), torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("weight_decay", [0.1, 1.0])
def test_decay_only_for_matrices_and_only_by_lr_times_wd(weight_decay):
    """Zero gradients: the update is 0, so only decoupled decay moves a >= 2-D parameter."""
    w = torch.nn.Parameter(torch.full((2, 2), 3.0, dtype=torch.float64))
    b = torch.nn.Parameter(torch.full((2,), 3.0, dtype=torch.float64))
    plan = PartitionPlan(
        {
            "w": PlanEntry((2, 2), "linear", BlockLayout.rows(0)),
            "b": PlanEntry((2,), "bias", BlockLayout.element()),
        }
    )
    opt = AdamMini([("w", w), ("b", b)], partition=plan, lr=0.5, weight_decay=weight_decay)
    for _ in range(2):
        w.grad, b.grad = torch.zeros_like(w), torch.zeros_like(b)
        opt.step()
    factor = {0.1: 0.95, 1.0: 0.5}[weight_decay]  # 1 - lr * weight_decay
    assert w.detach().flatten().tolist() == pytest.approx([3.0 * factor**2] * 4, rel=1e-15)
    assert b.detach().tolist() == [3.0, 3.0]


def test_params_of_different_dtypes_each_follow_their_reference():
    """fp32 and fp64 params, interleaved in one group, are grouped per dtype and kept apart."""
    names = ["a", "b", "c", "d"]
    layouts = [CASES[k] for k in ("heads", "rows1", "experts", "vector_tensor")]
    dtypes = [torch.float32, torch.float64, torch.float32, torch.float64]
    p0 = {n: values(math.prod(shape), i) for i, (n, (_, shape, _)) in enumerate(zip(names, layouts))}
    grads = {
        n: [values(math.prod(shape), 10 * i + s) for s in range(3)]
        for i, (n, (_, shape, _)) in enumerate(zip(names, layouts))
    }
    params = {
        n: torch.nn.Parameter(torch.tensor(p0[n], dtype=dt).reshape(shape))
        for n, (_, shape, _), dt in zip(names, layouts, dtypes)
    }
    plan = PartitionPlan(
        {n: PlanEntry(shape, "linear", make()) for n, (make, shape, _) in zip(names, layouts)}
    )
    opt = AdamMini(list(params.items()), partition=plan, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    for s in range(3):
        for n, (_, shape, _), dt in zip(names, layouts, dtypes):
            params[n].grad = torch.tensor(grads[n][s], dtype=dt).reshape(shape)
        opt.step()
    for n, (_, shape, block_of), dt in zip(names, layouts, dtypes):
        want, _ = reference_steps(
            p0[n],
            [[float(torch.tensor(x, dtype=dt)) for x in g] for g in grads[n]],
            block_of,
            wd=WD if len(shape) >= 2 else 0.0,
        )
        torch.testing.assert_close(
            params[n].detach().double().flatten(),
            torch.tensor(want, dtype=torch.float64),
            rtol=2e-5,
            atol=1e-6,
        )


def test_bf16_first_moment_for_fp32_params():
    """exp_avg_dtype=bf16: m is kept (and updated) in bf16; the step still follows the reference
    within bf16 rounding of m."""
    make_layout, shape, block_of = CASES["rows0"]
    layout = make_layout()
    p0, grads = values(6, 7), [values(6, 8), values(6, 9)]
    got, state = run_adam_mini(layout, shape, p0, grads, dtype=torch.float32, exp_avg_dtype=torch.bfloat16)
    assert state["exp_avg"].dtype == torch.bfloat16 and state["exp_avg_sq"].dtype == torch.float32
    want, _ = reference_steps(p0, grads, block_of)
    torch.testing.assert_close(
        got.double().flatten(), torch.tensor(want, dtype=torch.float64), rtol=2e-2, atol=2e-3
    )


def test_lr_as_tensor_and_changed_between_steps():
    make_layout, shape, block_of = CASES["heads"]
    layout = make_layout()
    p0, grads = values(8, 11), [values(8, 12), values(8, 13)]
    p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64).reshape(shape))
    plan = PartitionPlan({"w": PlanEntry(shape, "linear", layout)})
    opt = AdamMini([("w", p)], partition=plan, lr=torch.tensor(LR), betas=BETAS, eps=EPS, weight_decay=WD)
    p.grad = torch.tensor(grads[0], dtype=torch.float64).reshape(shape)
    opt.step()
    opt.param_groups[0]["lr"].fill_(0.03)
    p.grad = torch.tensor(grads[1], dtype=torch.float64).reshape(shape)
    opt.step()
    # reference: step 1 at lr 0.1, step 2 at lr 0.03 (decay and step size both follow lr)
    b1, b2 = BETAS
    ref, m, v = list(p0), [0.0] * 8, {}
    for t, (g, lr) in enumerate(zip(grads, (LR, 0.03)), start=1):
        for b in (0, 1):
            members = [i for i in range(8) if block_of[i] == b]
            v[b] = b2 * v.get(b, 0.0) + (1 - b2) * sum(g[i] ** 2 for i in members) / 4
        for i in range(8):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            ref[i] = ref[i] * (1 - lr * WD) - lr / (1 - b1**t) * m[i] / (
                math.sqrt(v[block_of[i]] / (1 - b2**t)) + EPS
            )
    torch.testing.assert_close(
        p.detach().flatten(), torch.tensor(ref, dtype=torch.float64), rtol=1e-6, atol=1e-9
    )


# ---- BlockReduction on hand-written rows ------------------------------------------------------
def test_mean_square_and_expand_for_uneven_blocks():
    # rows 0-1 form one block (a head of 2), row 2 its own block; 2 columns reduced per row
    layout = BlockLayout.segmented([(2, 2), (1, 1)])
    red = BlockReduction.build(layout, (3, 2), torch.device("cpu"))
    g = torch.tensor([[1.0, 1.0], [3.0, 3.0], [2.0, 0.0]], dtype=torch.float64)
    ms = red.mean_square(g)
    assert ms.shape == (2, 1) and ms.flatten().tolist() == pytest.approx(
        [5.0, 2.0], rel=1e-14
    )  # (1+1+9+9)/4, (4+0)/2
    assert red.expand(torch.tensor([[10.0], [20.0]])).flatten().tolist() == [10.0, 10.0, 20.0]
    assert not red.is_elementwise


def test_reduction_along_dim1_with_an_expert_axis():
    red = BlockReduction.build(BlockLayout.rows(1, batch_axes=(0,)), (2, 2, 2), torch.device("cpu"))
    g = torch.tensor([[[1.0, 3.0], [0.0, 2.0]], [[4.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    ms = red.mean_square(g)
    assert ms.shape == (2, 2, 1) and ms.flatten().tolist() == pytest.approx([5.0, 2.0, 8.0, 1.0], rel=1e-14)


def test_all_rows_in_one_block_reduce_the_row_axis_too():
    red = BlockReduction.build(BlockLayout.rows(0, group=3), (3, 2), torch.device("cpu"))
    assert red.row_to_block is None and red.reduce_dims == (0, 1) and red.row_numel == 6
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    assert red.mean_square(g).flatten().tolist() == pytest.approx([91 / 6], rel=1e-14)
    assert red.expand(torch.tensor([[7.0]])).tolist() == [[7.0]]


def test_elementwise_reduction_is_the_square():
    red = BlockReduction.build(BlockLayout.element(), (3,), torch.device("cpu"))
    assert red.is_elementwise and red.reduce_dims == () and red.row_numel == 1
    g = torch.tensor([1.0, -2.0, 3.0], dtype=torch.bfloat16)
    ms = red.mean_square(g)
    assert ms.dtype == torch.float32 and ms.tolist() == [1.0, 4.0, 9.0]


@pytest.mark.parametrize(
    "param, v",
    [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_second_moment_dtype(param, v):
    assert v_dtype(param) == v
    red = BlockReduction.build(BlockLayout.rows(0, group=2), (4, 2), torch.device("cpu"))
    assert red.mean_square(torch.ones(4, 2, dtype=param)).dtype == v
