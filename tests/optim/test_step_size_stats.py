"""The logged step sizes ``lr / (sqrt(v / (1 - beta2^t)) + eps)``, by hand, and read in one host sync."""

from __future__ import annotations

import pytest
import torch

from lightning_adam_mini import AdamMini
from lightning_adam_mini.stats import step_size_stats
from partitioners import BlockLayout, PartitionPlan, PlanEntry

LR, EPS = 0.1, 0.5


def _optimizer(beta2: float, steps: int) -> AdamMini:
    """A (2, 2) weight, one block, gradient 3 everywhere; a bias (3,) per element, gradient 1, 2, 4.
    With a constant gradient, v / (1 - beta2^t) is g^2 (the block's mean square) at every t."""
    plan = PartitionPlan(
        {
            "w": PlanEntry((2, 2), "linear", BlockLayout.tensor()),
            "b": PlanEntry((3,), "bias", BlockLayout.element()),
        }
    )
    w, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.zeros(3))
    opt = AdamMini([("w", w), ("b", b)], partition=plan, lr=LR, betas=(0.9, beta2), eps=EPS)
    for _ in range(steps):
        w.grad, b.grad = torch.full((2, 2), 3.0), torch.tensor([1.0, 2.0, 4.0])
        opt.step()
    return opt


@pytest.mark.parametrize("beta2", [0.5, 0.999, 0.0])
@pytest.mark.parametrize("steps", [1, 3])
def test_step_sizes_by_hand(beta2, steps):
    stats = step_size_stats(_optimizer(beta2, steps), prefix="am")
    size = {g: LR / (g + EPS) for g in (1.0, 2.0, 3.0, 4.0)}  # sqrt(g^2) = g
    want = {
        "am/step_size/bias/min": size[4.0],
        "am/step_size/bias/median": size[2.0],
        "am/step_size/bias/max": size[1.0],
        "am/step_size/linear/min": size[3.0],
        "am/step_size/linear/median": size[3.0],
        "am/step_size/linear/max": size[3.0],
        "am/params/bias": 3 / 7,
        "am/params/linear": 4 / 7,
    }
    assert stats == pytest.approx(want, rel=1e-6)


def test_empty_before_the_first_step_but_for_the_role_shares():
    assert step_size_stats(_optimizer(0.999, 0)) == pytest.approx(
        {"adam_mini/params/bias": 3 / 7, "adam_mini/params/linear": 4 / 7}
    )


def test_all_roles_are_read_in_one_host_sync(monkeypatch):
    """On a GPU each ``.item()`` / ``float(t)`` waits for the device: one read for all numbers."""
    opt = _optimizer(0.999, 2)
    reads = []
    for method in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, method)

        def counting(self, *args, _original=original, _method=method):
            reads.append(_method)
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, method, counting)
    step_size_stats(opt)
    assert reads == ["tolist"]
