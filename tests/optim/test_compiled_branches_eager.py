"""The step's compiled-only branches (the non-finite selects, the fused dtype conversion), run
eagerly: ``torch.compiler.is_compiling()`` answers True, so ``adam_mini`` takes the code that
``torch.compile`` would trace, in seconds instead of a compile per case. Expectations: the float64
reference of ``test_block_math_exact`` with block ids written by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_adam_mini import functional
from lightning_adam_mini.blocks import BlockReduction
from partitioners import BlockLayout

from .test_block_math_exact import BETAS, EPS, LR, WD, reference_steps, values

# (layout, shape, block of every element in row-major order, by hand)
A = (BlockLayout.rows(0), (2, 3), [0, 0, 0, 1, 1, 1])
B = (BlockLayout.rows(0, group=2), (4, 2), [0, 0, 0, 0, 1, 1, 1, 1])


@pytest.fixture
def as_if_compiling(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)


def _state(cases, dtypes, m_dtype=None):
    params, exp_avgs, exp_avg_sqs, steps, reductions = [], [], [], [], []
    for (layout, shape, block_of), dtype in zip(cases, dtypes):
        p = torch.tensor(values(len(block_of), 1), dtype=dtype).reshape(shape)
        red = BlockReduction.build(layout, shape, torch.device("cpu"))
        params.append(p)
        exp_avgs.append(torch.zeros(shape, dtype=m_dtype or dtype))
        exp_avg_sqs.append(
            torch.zeros(red.v_shape, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        )
        steps.append(torch.zeros((), dtype=torch.float32))
        reductions.append(red)
    return params, exp_avgs, exp_avg_sqs, steps, reductions


def _steps(state, grads_per_step, skips=None):
    params, exp_avgs, exp_avg_sqs, steps, reductions = state
    for grads in grads_per_step:
        functional.adam_mini(
            params,
            [g.reshape(p.shape).to(p.dtype) for g, p in zip(grads, params)],
            exp_avgs,
            exp_avg_sqs,
            steps,
            reductions,
            [True] * len(params),
            lr=LR,
            beta1=BETAS[0],
            beta2=BETAS[1],
            eps=EPS,
            weight_decay=WD,
            nonfinite_skips=skips,
        )


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_compiled_skip_selects_leave_the_bad_parameter_as_it_was(as_if_compiling, bad):
    state = _state([A, B], [torch.float64, torch.float64])
    grads = [[torch.tensor(values(6, s)), torch.tensor(values(8, s + 10))] for s in (2, 3, 4)]
    poisoned = grads[1][1].clone()
    poisoned[5] = bad
    skips = [torch.zeros((), dtype=torch.int64), torch.zeros((), dtype=torch.int64)]
    _steps(state, [grads[0], [grads[1][0], poisoned], grads[2]], skips)
    params, exp_avgs, exp_avg_sqs, steps, _ = state
    # a: three steps; b: its second step skipped (no decay, no m/v/step change), as if absent.
    # (1e-6: compiled, the bias corrections are fp32 tensors, like the step counts)
    want_a, _ = reference_steps(values(6, 1), [g[0].tolist() for g in grads], A[2])
    want_b, v_b = reference_steps(values(8, 1), [grads[0][1].tolist(), grads[2][1].tolist()], B[2])
    torch.testing.assert_close(
        params[0].flatten(), torch.tensor(want_a, dtype=torch.float64), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(
        params[1].flatten(), torch.tensor(want_b, dtype=torch.float64), rtol=0, atol=1e-6
    )
    assert exp_avg_sqs[1].flatten().tolist() == pytest.approx([v_b[0], v_b[1]], abs=1e-9)
    assert [s.item() for s in steps] == [3.0, 2.0]
    assert int(skips[0] + skips[1]) == 1  # counted once (on the group's first counter)
    assert torch.isfinite(exp_avgs[1]).all()


def test_compiled_low_precision_m_follows_the_reference(as_if_compiling):
    """fp32 params with a bf16 ``m``: the conversion inside the lerp and one addcdiv over all."""
    state = _state([A, B], [torch.float32, torch.float32], m_dtype=torch.bfloat16)
    grads = [[torch.tensor(values(6, s)), torch.tensor(values(8, s + 10))] for s in (2, 3, 4)]
    _steps(state, grads)
    for i, (_, _, block_of) in enumerate((A, B)):
        want, _ = reference_steps(values(len(block_of), 1), [g[i].tolist() for g in grads], block_of)
        # bf16 m: 8 bits of mantissa, ~0.4% per rounding of m, three steps
        torch.testing.assert_close(
            state[0][i].flatten().double(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=2e-2
        )
    assert state[1][0].dtype == torch.bfloat16


@pytest.mark.parametrize("bad", [0, 1])
def test_eager_skip_of_a_whole_group_still_updates_the_other_group(bad):
    """Two dtype groups (fp64, fp32); every parameter of one is skipped: the other still steps,
    whichever group comes first."""
    cases, dtypes = [A, B], [torch.float64, torch.float32]
    state = _state(cases, dtypes)
    good = 1 - bad
    grads = [[torch.tensor(values(6, 11)), torch.tensor(values(8, 12))]]
    grads[0][bad] = torch.full_like(grads[0][bad], math.nan)
    skips = [torch.zeros((), dtype=torch.int64), torch.zeros((), dtype=torch.int64)]
    _steps(state, grads, skips)
    params, _, _, steps, _ = state
    n_bad, n_good = len(cases[bad][2]), len(cases[good][2])
    assert torch.equal(params[bad].flatten(), torch.tensor(values(n_bad, 1), dtype=dtypes[bad]))
    want, _ = reference_steps(values(n_good, 1), [grads[0][good].tolist()], cases[good][2])
    torch.testing.assert_close(
        params[good].flatten().double(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-6
    )
    assert steps[bad].item() == 0.0 and steps[good].item() == 1.0
    assert int(skips[bad]) == 1 and int(skips[good]) == 0


def test_compiled_skip_with_a_low_precision_m(as_if_compiling):
    """bf16 ``m`` under the compiled skip: the good parameter's ``m`` takes its gradient converted
    to bf16 inside the select; the skipped one keeps its parameter and a zero ``m``."""
    state = _state([A, B], [torch.float32, torch.float32], m_dtype=torch.bfloat16)
    grads = [torch.tensor(values(6, 2)), torch.tensor(values(8, 3))]
    grads[1][0] = math.nan
    skips = [torch.zeros((), dtype=torch.int64), torch.zeros((), dtype=torch.int64)]
    _steps(state, [grads], skips)
    params, exp_avgs, _, steps, _ = state
    want, _ = reference_steps(values(6, 1), [grads[0].tolist()], A[2])
    torch.testing.assert_close(
        params[0].flatten().double(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-2
    )
    m_want = [(1 - BETAS[0]) * g for g in grads[0].tolist()]  # m starts at zero
    assert exp_avgs[0].dtype == torch.bfloat16
    assert exp_avgs[0].flatten().double().tolist() == pytest.approx(m_want, rel=1e-2)
    assert torch.equal(params[1].flatten(), torch.tensor(values(8, 1), dtype=torch.float32))
    assert not exp_avgs[1].any() and [s.item() for s in steps] == [1.0, 0.0]
