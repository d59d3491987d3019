"""Bad input gets a clear error naming the parameter or hyperparameter."""

import math

import pytest
import torch
from torch import nn

from lightning_adam_mini import AdamMini
from partitioners import BlockLayout, PartitionPlan, PlanEntry, PlanMismatchError

from .conftest import tiny_llama, tiny_plan


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-1e-3), "lr"),
        (dict(lr=math.nan), "lr"),
        (dict(lr=math.inf), "lr"),
        (dict(eps=-1.0), "eps"),
        (dict(eps=math.nan), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(weight_decay=math.inf), "weight_decay"),
        (dict(betas=(1.0, 0.999)), r"betas\[0\]"),
        (dict(betas=(0.9, -0.1)), r"betas\[1\]"),
        (dict(betas=(0.9, math.nan)), r"betas\[1\]"),
        (dict(betas=(0.9,)), "betas"),
        (dict(lr=torch.tensor(math.nan)), "lr"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    model = tiny_llama()
    with pytest.raises(ValueError, match=match):
        AdamMini(model, partition=tiny_plan(model), **kwargs)


def test_bad_param_group_hyperparameters():
    model = tiny_llama()
    named = list(model.named_parameters())
    groups = [{"params": named[:3]}, {"params": named[3:], "lr": -1.0}]
    with pytest.raises(ValueError, match="lr"):
        AdamMini(groups, partition=tiny_plan(model))


def test_sparse_gradient_names_the_parameter():
    model = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Linear(4, 2))
    plan = PartitionPlan(
        {
            "0.weight": PlanEntry((10, 4), "embedding", BlockLayout.rows(0)),
            "1.weight": PlanEntry((2, 4), "linear", BlockLayout.rows(0)),
            "1.bias": PlanEntry((2,), "bias", BlockLayout.element()),
        }
    )
    opt = AdamMini(model, partition=plan)
    model(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match=r"sparse gradients \(parameter '0\.weight'\)"):
        opt.step()


def test_complex_parameter_names_the_parameter():
    p = nn.Parameter(torch.randn(3, 2, dtype=torch.complex64))
    plan = PartitionPlan({"w": PlanEntry((3, 2), "linear", BlockLayout.rows(0))})
    opt = AdamMini([("w", p)], partition=plan)
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="complex parameters \\('w'\\)"):
        opt.step()


def test_plan_must_match_the_model():
    model = tiny_llama()
    plan = tiny_plan(model)
    missing = PartitionPlan({n: e for n, e in plan.items() if n != "norm.weight"})
    with pytest.raises(PlanMismatchError, match="'norm.weight'"):
        AdamMini(model, partition=missing)
    extra = PartitionPlan({**plan, "ghost.weight": PlanEntry((3,), "norm", BlockLayout.tensor())})
    with pytest.raises(PlanMismatchError, match="ghost.weight"):
        AdamMini(model, partition=extra)
    wrong = plan.replace("lm_head.weight", shape=(65, 32))
    with pytest.raises(PlanMismatchError, match="'lm_head.weight' has shape"):
        AdamMini(model, partition=wrong)


def test_unnamed_params_and_missing_plan_are_explained():
    model = tiny_llama()
    # Bare tensors (LightningCLI) make an unbound optimizer: stepping it says how to bind it.
    unbound = AdamMini(model.parameters(), partition=tiny_plan(model))
    with pytest.raises(RuntimeError, match=r"optimizer\.bind\(model\)"):
        unbound.step()
    with pytest.raises(ValueError, match="pass partition="):
        AdamMini(model.named_parameters())
    with pytest.raises(ValueError, match="empty"):
        AdamMini([], partition=tiny_plan(model))


def test_named_params_subset_with_full_plan():
    model = tiny_llama()
    subset = [(n, p) for n, p in model.named_parameters() if "mlp" in n]
    opt = AdamMini(subset, partition=tiny_plan(model), lr=1e-2)
    model(torch.randint(0, 64, (2, 8))).sum().backward()
    before = model.lm_head.weight.detach().clone()
    opt.step()
    assert torch.equal(model.lm_head.weight, before)
    assert len(opt.state) == len(subset)


def test_single_process_needs_no_process_group():
    assert not torch.distributed.is_initialized()
    model = tiny_llama()
    opt = AdamMini(model, partition=tiny_plan(model))
    model(torch.randint(0, 64, (2, 8))).sum().backward()
    opt.step()
    assert not torch.distributed.is_initialized()
