"""AdamMini from bare tensors (LightningCLI, OptimizerCallable, Hydra _partial_): unbound until
`bind(module)`, then identical to an optimizer built from the module."""

from __future__ import annotations

import pytest
import torch

from lightning_adam_mini import AdamMini, auto_partition
from partitioners import PlanMismatchError
from tests.lightning.lit_gpt import LitGPT, example_tokens


def step(module: LitGPT, opt: AdamMini, seed: int) -> None:
    torch.manual_seed(seed)
    x = torch.randint(0, 63, (4, 8))
    opt.zero_grad()
    module.loss((x, x.roll(-1, dims=1))).backward()
    opt.step()


def test_unbound_until_bind_then_same_as_from_the_module():
    a, b = LitGPT(), LitGPT()
    unbound = AdamMini(a.parameters(), lr=1e-2, weight_decay=0.1)
    assert not unbound.is_bound and unbound.plan is None
    with pytest.raises(
        RuntimeError, match=r"bare tensors.*no module was called.*optimizer\.bind\(model.*AdamMiniCallback"
    ):
        unbound.step()
    assert "partition_plan" not in unbound.state_dict()["param_groups"][0]  # no state, no plan yet
    assert unbound.bind(a, example_inputs=(example_tokens(),)) is unbound
    assert unbound.param_groups[0]["param_names"] == [n for n, _ in a.named_parameters()]
    reference = AdamMini(b, lr=1e-2, weight_decay=0.1, example_inputs=(example_tokens(),))
    assert unbound.plan == reference.plan
    for seed in range(3):
        step(a, unbound, seed)
        step(b, reference, seed)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert unbound.bind(LitGPT()) is unbound  # binding again is a no-op


def test_bind_uses_the_partition_given_at_construction_and_param_groups():
    module = LitGPT()
    plan = auto_partition(module, (example_tokens(),))
    decay = [p for p in module.parameters() if p.ndim >= 2]
    no_decay = [p for p in module.parameters() if p.ndim < 2]
    opt = AdamMini(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], partition=plan
    )
    opt.bind(module)
    assert opt.plan is plan
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert sum(len(g["param_names"]) for g in opt.param_groups) == len(plan)


def test_bind_to_another_module_is_explained():
    opt = AdamMini(LitGPT().parameters())
    with pytest.raises(ValueError, match=r"not a parameter of LitGPT.*configure_optimizers"):
        opt.bind(LitGPT(), example_inputs=(example_tokens(),))


def test_state_dict_plan_survives_without_the_top_level_key():
    """torch.distributed.checkpoint keeps only "state" and "param_groups": the per-group plan
    entries are enough to check and load."""
    module = LitGPT()
    opt = AdamMini(module, example_inputs=(example_tokens(),))
    step(module, opt, 0)
    sd = opt.state_dict()
    assert all("partition_plan" in g for g in sd["param_groups"])
    dcp_like = {"state": sd["state"], "param_groups": sd["param_groups"]}
    fresh = AdamMini(module, example_inputs=(example_tokens(),))
    fresh.load_state_dict(dcp_like)
    assert all("partition_plan" not in g for g in fresh.param_groups)
    head = module.model.lm_head.weight
    assert torch.equal(fresh.state[head]["exp_avg"], opt.state[head]["exp_avg"])

    other = opt.plan.replace(
        "model.layers.0.self_attn.q_proj.weight", layout=opt.plan["model.lm_head.weight"].layout
    )
    mismatched = AdamMini(module.named_parameters(), partition=other)
    with pytest.raises(PlanMismatchError, match="q_proj"):
        mismatched.load_state_dict(dcp_like)
