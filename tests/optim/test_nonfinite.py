"""nonfinite="skip": a parameter with a NaN/inf gradient is left untouched and counted."""

import math

import pytest
import torch

from lightning_adam_mini import AdamMini
from partitioners import BlockLayout, PartitionPlan, PlanEntry

PLAN = PartitionPlan(
    {
        "a": PlanEntry((4, 3), "linear", BlockLayout.rows(0)),
        "b": PlanEntry((2, 3), "linear", BlockLayout.rows(0)),
    }
)


def _params():
    return torch.nn.Parameter(torch.ones(4, 3)), torch.nn.Parameter(torch.ones(2, 3))


@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_skip_leaves_the_bad_parameter_untouched_and_counts(compile, bad):
    torch._dynamo.reset()
    a, b = _params()
    opt = AdamMini(
        [("a", a), ("b", b)], partition=PLAN, lr=0.1, weight_decay=0.5, nonfinite="skip", compile=compile
    )
    for step in range(3):
        a.grad = torch.full((4, 3), 2.0)
        if step == 1:
            a.grad[2, 1] = bad
        b.grad = torch.full((2, 3), 2.0)
        opt.step()
    # b: three clean steps; a: two (step 2 skipped entirely, including its step count and decay).
    assert opt.state[b]["step"].item() == 3 and opt.state[a]["step"].item() == 2
    assert opt.nonfinite_skipped == 1
    # With a constant gradient every bias-corrected step is lr * 2 / (sqrt(4) + eps) = lr, after
    # the decay by (1 - lr * weight_decay) = 0.95: p <- 0.95 p - 0.1.
    expected_a, expected_b = 1.0, 1.0
    for _ in range(2):
        expected_a = 0.95 * expected_a - 0.1
    for _ in range(3):
        expected_b = 0.95 * expected_b - 0.1
    torch.testing.assert_close(a.detach(), torch.full((4, 3), expected_a), rtol=0, atol=1e-6)
    torch.testing.assert_close(b.detach(), torch.full((2, 3), expected_b), rtol=0, atol=1e-6)
    assert torch.isfinite(opt.state[a]["exp_avg"]).all() and torch.isfinite(opt.state[a]["exp_avg_sq"]).all()


def test_default_propagates_and_one_nan_poisons_its_block_only():
    """The documented difference from AdamW: a NaN element makes its whole block's v NaN."""
    a, b = _params()
    opt = AdamMini([("a", a), ("b", b)], partition=PLAN, lr=0.1)
    a.grad, b.grad = torch.ones(4, 3), torch.ones(2, 3)
    a.grad[2, 1] = math.nan
    opt.step()
    assert a[2].isnan().all() and not a[[0, 1, 3]].isnan().any()  # AdamW: a[2, 1] alone
    assert not b.isnan().any() and opt.nonfinite_skipped == 0


def test_nonfinite_setting_is_checked():
    a, b = _params()
    with pytest.raises(ValueError, match="nonfinite"):
        AdamMini([("a", a), ("b", b)], partition=PLAN, nonfinite="zero")
