"""Per-group lr and weight_decay, and decay_filter, checked as the updates they apply.

Expected values are computed by hand from the first-step formula (bias corrections cancel at
t = 1: m_hat = g, v_hat = mean of g^2 over the block):
    p <- p * (1 - lr * wd) if decayed;  p <- p - lr * g / (sqrt(v_hat) + eps)
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_adam_mini import AdamMini
from partitioners import BlockLayout, PartitionPlan, PlanEntry

EPS = 1e-8
PLAN = PartitionPlan(
    {
        "weight": PlanEntry((2, 3), "linear", BlockLayout.rows(0)),  # one block per row
        "bias": PlanEntry((2,), "bias", BlockLayout.element()),
    }
)


def _layer() -> nn.Linear:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
        layer.bias.copy_(torch.tensor([1.0, -1.0]))
    layer.weight.grad = torch.tensor([[3.0, 0.0, 4.0], [1.0, 1.0, 1.0]])
    layer.bias.grad = torch.tensor([0.5, -2.0])
    return layer


def _hand_update(p, g, lr, wd, block_rms):
    return p * (1 - lr * wd) - lr * g / (block_rms + EPS)


def test_each_group_applies_its_own_lr_and_weight_decay():
    layer = _layer()
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    groups = [
        {"params": [("weight", layer.weight)], "lr": 0.1, "weight_decay": 0.5},
        {"params": [("bias", layer.bias)], "lr": 0.01, "weight_decay": 0.5},
    ]
    AdamMini(groups, partition=PLAN, eps=EPS).step()
    # row rms of the weight's gradient: sqrt((9 + 0 + 16) / 3), sqrt(1)
    rms = torch.tensor([[(25 / 3) ** 0.5], [1.0]])
    torch.testing.assert_close(layer.weight.detach(), _hand_update(w0, layer.weight.grad, 0.1, 0.5, rms))
    # the bias is 1-D: not decayed by default; element layout: |g| per element
    expected_bias = _hand_update(b0, layer.bias.grad, 0.01, 0.0, layer.bias.grad.abs())
    torch.testing.assert_close(layer.bias.detach(), expected_bias)


def test_decay_filter_chooses_the_decayed_parameters():
    layer = _layer()
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    opt = AdamMini(
        list(layer.named_parameters()),
        partition=PLAN,
        lr=0.1,
        eps=EPS,
        weight_decay=0.5,
        decay_filter=lambda name, p: name == "bias",  # the opposite of the default
    )
    opt.step()
    rms = torch.tensor([[(25 / 3) ** 0.5], [1.0]])
    torch.testing.assert_close(layer.weight.detach(), _hand_update(w0, layer.weight.grad, 0.1, 0.0, rms))
    expected_bias = _hand_update(b0, layer.bias.grad, 0.1, 0.5, layer.bias.grad.abs())
    torch.testing.assert_close(layer.bias.detach(), expected_bias)


@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_default_decay_matches_torch_adamw_on_an_element_layout(wd):
    """With every block one element, Adam-mini is AdamW: per group, decayed or not."""
    plan = PartitionPlan(
        {n: PlanEntry(s, "x", BlockLayout.element()) for n, s in [("weight", (2, 3)), ("bias", (2,))]}
    )
    ours, ref = _layer(), _layer()
    AdamMini(list(ours.named_parameters()), partition=plan, lr=0.1, eps=EPS, weight_decay=wd).step()
    torch.optim.AdamW(
        [{"params": [ref.weight]}, {"params": [ref.bias], "weight_decay": 0.0}],
        lr=0.1,
        eps=EPS,
        weight_decay=wd,
    ).step()
    torch.testing.assert_close(ours.weight, ref.weight)
    torch.testing.assert_close(ours.bias, ref.bias)
