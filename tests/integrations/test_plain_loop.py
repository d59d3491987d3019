"""A hand-written loop: ``AdamMini(model.parameters(), lr=...)``, forward, backward, step. The
optimizer binds itself at its first step; what it can't tell is an error that says what to do."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module

from lightning_adam_mini import AdamMini
from lightning_adam_mini.owner import OwnerNotFoundError
from tests.integrations.common import (
    LR,
    WEIGHT_DECAY,
    assert_same_params,
    batches,
    explicitly_bound_run,
    loss_of,
    tiny_llama,
)


def hooks_installed() -> int:
    return len(torch_module._global_forward_pre_hooks) + len(torch_module._global_forward_hooks)


def test_plain_loop_binds_at_the_first_step_and_trains_like_the_bound_optimizer():
    before = hooks_installed()
    model = tiny_llama()
    opt = AdamMini(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    assert not opt.is_bound and hooks_installed() == before + 2
    for x, y in batches():
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
        assert hooks_installed() == before  # gone after the first step
    reference, explicit = explicitly_bound_run()
    assert opt.plan == explicit.plan
    assert_same_params(model, reference)


class Wrapper(nn.Module):
    """Holds nothing but the network (as DDP or Fabric's module wrapper do)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def test_a_wrapper_holding_nothing_else_is_looked_through():
    model = tiny_llama()
    opt = AdamMini(model.parameters(), lr=LR)
    Wrapper(model)(torch.zeros(2, 8, dtype=torch.long)).sum().backward()
    opt.step()
    assert opt.param_groups[0]["param_names"] == [n for n, _ in model.named_parameters()]


def groups(model: nn.Module, named: bool) -> list[dict]:
    """The Hugging Face Trainer's grouping: decay for matrices, none (and here 3x the lr) for
    vectors."""
    params = list(model.named_parameters() if named else model.parameters())
    ndims = [p.ndim for p in model.parameters()]
    return [
        {"params": [p for p, d in zip(params, ndims) if d >= 2], "weight_decay": 0.5},
        {"params": [p for p, d in zip(params, ndims) if d < 2], "weight_decay": 0.0, "lr": 3 * LR},
    ]


def test_per_group_hyperparameters_are_applied_as_given():
    model = tiny_llama()
    opt = AdamMini(groups(model, named=False), lr=LR)
    x, y = next(batches(1))
    loss_of(model, x, y).backward()
    before = {
        n: (p.detach().clone(), torch.clone(p.grad))
        for n, p in model.named_parameters()
        if p.grad is not None
    }
    opt.step()
    # step 1 by hand (bias corrections cancel): p <- p (1 - lr wd) - lr g / (sqrt(mean_block g^2) + eps)
    p0, g = before["norm.weight"]  # 1-D, one block, second group: lr 3 LR, no decay
    want = p0 - 3 * LR * g / (g.square().mean().sqrt() + 1e-8)
    torch.testing.assert_close(model.norm.weight.detach(), want, rtol=1e-6, atol=1e-7)
    p0, g = before["lm_head.weight"]  # output head, a block per row, first group: lr LR, decay 0.5
    want = p0 * (1 - LR * 0.5) - LR * g / (g.square().mean(dim=1, keepdim=True).sqrt() + 1e-8)
    torch.testing.assert_close(model.lm_head.weight.detach(), want, rtol=1e-6, atol=1e-7)


def test_per_group_training_matches_the_explicitly_bound_groups():
    models = tiny_llama(), tiny_llama()
    bare = AdamMini(groups(models[0], named=False), lr=LR)
    explicit = AdamMini(groups(models[1], named=True), lr=LR, partition=_plan())
    for x, y in batches():
        for model, opt in zip(models, (bare, explicit)):
            opt.zero_grad()
            loss_of(model, x, y).backward()
            opt.step()
    assert [g["param_names"] for g in bare.param_groups] == [g["param_names"] for g in explicit.param_groups]
    assert bare.plan == explicit.plan
    for (name, p), q in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def _plan():
    from lightning_adam_mini import auto_partition

    return auto_partition(tiny_llama(), (torch.zeros(2, 8, dtype=torch.long),))


def test_a_state_loaded_before_the_first_forward_is_applied_when_it_binds():
    """Resuming (frameworks load the optimizer state before training) works unbound."""
    model, trained = explicitly_bound_run(steps=2)
    fresh = AdamMini(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    fresh.load_state_dict(trained.state_dict())
    assert not fresh.is_bound and not fresh.state
    x, y = next(batches(1))
    loss_of(model, x, y).backward()
    fresh.step()
    head = model.lm_head.weight
    assert float(fresh.state[head]["step"]) == 3.0


# ---- what it can't tell ------------------------------------------------------------------------


def test_step_before_any_forward_says_what_to_do():
    opt = AdamMini(tiny_llama().parameters())
    with pytest.raises(
        OwnerNotFoundError, match=r"no module was called before its first step.*optimizer\.bind\(model"
    ):
        opt.step()


def test_tensors_outside_any_module_say_what_to_do():
    w = torch.randn(4, 4, requires_grad=True)
    opt = AdamMini([w])
    nn.Linear(4, 4)(torch.randn(2, 4))  # some module runs, but none holds w
    (w**2).sum().backward()
    with pytest.raises(OwnerNotFoundError, match=r"none of the 1 module calls.*\(name, tensor\).*partition="):
        opt.step()


def test_parameters_spread_over_unrelated_modules_say_what_to_do():
    encoder, decoder = nn.Linear(4, 4), nn.Linear(4, 4)
    opt = AdamMini([*encoder.parameters(), *decoder.parameters()])
    decoder(encoder(torch.randn(2, 4))).sum().backward()
    with pytest.raises(
        OwnerNotFoundError,
        match=r"holds all 4 of them: they are spread over Linear \(2\), Linear \(2\).*bind\(model",
    ):
        opt.step()


def test_two_different_owners_say_what_to_do():
    net = tiny_llama()
    twin = tiny_llama()
    for name, child in net.named_children():  # another module over the very same parameters
        setattr(twin, name, child)
    opt = AdamMini(net.parameters())
    x = torch.zeros(2, 8, dtype=torch.long)
    (net(x).sum() + twin(x).sum()).backward()
    with pytest.raises(
        OwnerNotFoundError, match=r"2 different modules holding all of them.*\(Llama, Llama\).*bind\(model"
    ):
        opt.step()


def test_explicit_bind_takes_precedence_and_removes_the_hooks():
    before = hooks_installed()
    model = tiny_llama()
    opt = AdamMini(model.parameters())
    Wrapper(model)(torch.zeros(2, 8, dtype=torch.long))
    plan = _plan().replace("layers.0.self_attn.q_proj.weight", layout=_plan()["norm.weight"].layout)
    opt.bind(model, partition=plan)
    assert hooks_installed() == before and opt.plan is plan


def test_a_ddp_wrapped_model_is_named_after_the_network():
    """DistributedDataParallel (one gloo rank) holds the network as ``module``: looked through, so
    the plan is the network's and the training the bound optimizer's."""
    from tests.lightning.distributed import free_port

    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    try:
        model = tiny_llama()
        opt = AdamMini(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        ddp = nn.parallel.DistributedDataParallel(model)
        for x, y in batches():
            opt.zero_grad()
            loss_of(ddp, x, y).backward()
            opt.step()
    finally:
        torch.distributed.destroy_process_group()
    reference, explicit = explicitly_bound_run()
    assert opt.plan == explicit.plan
    assert_same_params(model, reference)
