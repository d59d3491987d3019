"""Optimizer faults that once trained silently wrong or crashed (issue 10, defects 1-5).

Each test states what torch's AdamW does in the same situation and asks AdamMini to do the same.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from lightning_adam_mini import AdamMini
from partitioners import PlanMismatchError, auto_partition

from ..optim.conftest import batch, lm_loss, tiny_llama, tiny_plan, train


def _two_groups(model):
    named = list(model.named_parameters())
    return [{"params": named[:4]}, {"params": named[4:]}]


def _lambda_lr(opt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "step() before optimizer.step()" is irrelevant here
        return torch.optim.lr_scheduler.LambdaLR(opt, [lambda s: 1.0 / (1 + s), lambda s: 0.5 ** (s % 5)])


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_per_group_lr_follows_the_scheduler_like_adamw(compile):
    """Defect 1: a default lr shared as one tensor gave every group the same scheduled lr."""
    torch._dynamo.reset()
    counters.clear()
    model = tiny_llama()
    named = list(model.named_parameters())
    opt = AdamMini(_two_groups(model), partition=tiny_plan(model), lr=1e-2, compile=compile)
    ref = torch.optim.AdamW(
        [{"params": [p for _, p in named[:4]]}, {"params": [p for _, p in named[4:]]}], lr=1e-2
    )
    sched, ref_sched = _lambda_lr(opt), _lambda_lr(ref)
    graphs = None
    for step in range(20):
        train(model, opt, 1, start=step)
        ref.step()  # no gradients: a no-op, so that the scheduler sees the usual order
        sched.step()
        ref_sched.step()
        if step == 1:
            graphs = counters["stats"]["unique_graphs"]
        lrs = [float(g["lr"]) for g in opt.param_groups]
        assert lrs == [g["lr"] for g in ref.param_groups], step
    assert lrs[0] != lrs[1]
    assert float(opt.defaults["lr"]) == 1e-2  # the scheduler changed the groups, not the defaults
    if compile:
        assert counters["stats"]["unique_graphs"] == graphs, "recompiled while the lr changed"


def test_add_param_group_gets_the_constructor_lr_not_a_scheduled_one():
    """Defect 1: ``defaults["lr"]`` was the shared tensor, so a new group inherited the schedule."""
    model = tiny_llama()
    named = list(model.named_parameters())
    opt = AdamMini(named[:4], partition=tiny_plan(model), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1)
    train(model, opt, 1)
    sched.step()
    opt.add_param_group({"params": named[4:]})
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(1e-3)
    assert float(opt.param_groups[1]["lr"]) == 1e-2


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("case", ["zero_grad_then_step", "unused_group"])
def test_step_without_gradients_is_a_no_op_like_adamw(case, compile):
    """Defect 2: a group with no gradients crashed inside the foreach update."""
    model = tiny_llama()
    opt = AdamMini(_two_groups(model), partition=tiny_plan(model), lr=1e-2, weight_decay=0.1, compile=compile)
    before = copy.deepcopy(model)
    if case == "zero_grad_then_step":  # Lightning's "training_step returned None" skip
        opt.zero_grad(set_to_none=True)
        opt.step()
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before.parameters()))
        assert not opt.state
    else:  # only the second group gets gradients
        lm_loss(model, batch(0)).backward()
        for p in opt.param_groups[0]["params"]:
            p.grad = None
        opt.step()
        first = opt.param_groups[0]["params"]
        assert all(
            torch.equal(p, before.get_parameter(n)) for n, p in zip(opt.param_groups[0]["param_names"], first)
        )
        assert not any(p in opt.state for p in first)


def test_state_is_loaded_by_name_not_by_position():
    """Defect 3: the same names in another order put a.weight's exp_avg on b.weight."""
    model = tiny_llama()
    named = list(model.named_parameters())
    opt = AdamMini(named, partition=tiny_plan(model), lr=1e-2)
    train(model, opt, 2)
    saved = opt.state_dict()
    reordered = AdamMini(list(reversed(named)), partition=tiny_plan(model), lr=1e-2)
    reordered.load_state_dict(saved)
    for _, p in named:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(reordered.state[p][key], opt.state[p][key]), key
    # and it keeps training exactly as the original would
    twin = copy.deepcopy(model)
    twin_named = dict(twin.named_parameters())
    twin_opt = AdamMini([(n, twin_named[n]) for n, _ in reversed(named)], partition=tiny_plan(twin), lr=1e-2)
    twin_opt.load_state_dict(saved)
    train(model, opt, 2, start=2)
    train(twin, twin_opt, 2, start=2)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_state_of_other_groups_is_refused_naming_the_parameter():
    model = tiny_llama()
    named = list(model.named_parameters())
    opt = AdamMini([{"params": named[:4]}, {"params": named[4:]}], partition=tiny_plan(model))
    train(model, opt, 1)
    other = AdamMini([{"params": named[:3]}, {"params": named[3:]}], partition=tiny_plan(model))
    with pytest.raises(PlanMismatchError, match=named[3][0].replace(".", r"\.")):
        other.load_state_dict(opt.state_dict())


def test_add_param_group_validates_before_adding():
    """Defect 4: a PlanMismatchError left a half-added group; the next step raised KeyError."""
    model = tiny_llama()
    named = list(model.named_parameters())
    opt = AdamMini(named[:4], partition=tiny_plan(model), lr=1e-2)
    ghost = nn.Parameter(torch.zeros(3))
    with pytest.raises(PlanMismatchError, match="'ghost'"):
        opt.add_param_group({"params": [("ghost", ghost)]})
    with pytest.raises(PlanMismatchError, match="'norm.weight' has shape"):
        opt.add_param_group({"params": [("norm.weight", nn.Parameter(torch.zeros(5)))]})
    assert len(opt.param_groups) == 1
    train(model, opt, 1)  # still steps


class KwargsOnly(nn.Module):
    """A model called as ``model(ids=...)`` only."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(16, 8)
        self.head = nn.Linear(8, 16, bias=False)

    def forward(self, *, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids))


def test_example_kwargs_alone_trace_the_graph():
    """Defect 5: example_kwargs were ignored when example_inputs was None (module fallback)."""
    model = KwargsOnly()
    kwargs = {"ids": torch.zeros(2, 5, dtype=torch.long)}
    plan = auto_partition(model, example_kwargs=kwargs)
    assert {e.decided_by for e in plan.values()} <= {"export", "fx"}
    assert plan["head.weight"].role == "output"
    opt = AdamMini(model, example_kwargs=kwargs)
    assert opt.plan == plan
