"""`adam_mini_optimizers`: the one-line configure_optimizers."""

from __future__ import annotations

import functools

import pytest
import torch

from lightning_adam_mini import AdamMini, AdamMiniCallback, adam_mini_optimizers, auto_partition
from tests.lightning.lit_gpt import LitGPT, Tokens, example_tokens, trainer


def plain_loop(steps: int, lr: float = 3e-3, weight_decay: float = 0.1) -> LitGPT:
    """The same training by hand: AdamMini over the module, traced with the same example."""
    module = LitGPT(lr=lr, weight_decay=weight_decay)
    opt = AdamMini(module, lr=lr, weight_decay=weight_decay, example_inputs=(example_tokens(),))
    loader = module.train_dataloader()
    for _, batch in zip(range(steps), loader):
        opt.zero_grad()
        module.loss(batch).backward()
        opt.step()
    return module


def test_helper_trains_exactly_like_a_plain_loop():
    module = LitGPT()
    t = trainer(max_steps=5)
    t.fit(module)
    opt = t.optimizers[0]
    assert isinstance(opt, AdamMini) and opt.is_bound
    assert opt.plan == auto_partition(module, (example_tokens(),))
    ref = plain_loop(5)
    for (name, a), b in zip(module.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_helper_returns_lightning_scheduler_dict_and_the_scheduler_runs():
    module = LitGPT()
    out = adam_mini_optimizers(
        module,
        lr=1e-2,
        scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
        interval="step",
        frequency=2,
        monitor="train_loss",
    )
    assert isinstance(out["optimizer"], AdamMini) and out["optimizer"].is_bound
    cfg = out["lr_scheduler"]
    assert isinstance(cfg["scheduler"], torch.optim.lr_scheduler.StepLR)
    assert (cfg["interval"], cfg["frequency"], cfg["monitor"]) == ("step", 2, "train_loss")

    module = LitGPT(
        lr=1e-2,
        optimizer_kwargs=dict(scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)),
    )
    t = trainer(max_steps=3)
    t.fit(module)
    assert float(t.optimizers[0].param_groups[0]["lr"]) == pytest.approx(1e-2 * 0.5**3)


def test_helper_takes_an_optimizer_factory():
    module = LitGPT()
    opt = adam_mini_optimizers(module, optimizer=functools.partial(AdamMini, lr=5e-4, eps=1e-6))
    assert opt.is_bound and opt.defaults["eps"] == 1e-6 and float(opt.defaults["lr"]) == 5e-4
    with pytest.raises(TypeError, match="factory of AdamMini"):
        adam_mini_optimizers(module, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3))


def test_helper_errors_say_what_to_do():
    with pytest.raises(TypeError, match="callable taking the optimizer"):
        adam_mini_optimizers(LitGPT(), scheduler=object())
    with pytest.raises(ValueError, match="interval must be 'step' or 'epoch'"):
        adam_mini_optimizers(LitGPT(), scheduler=lambda opt: None, interval="batch")
    # with an explicit example it works without one on the module
    assert adam_mini_optimizers(LitGPT(example=False), example_input=example_tokens()).is_bound


def test_helper_without_example_or_callback_binds_at_the_first_step():
    """No example input, no callback: the optimizer binds itself to the network it saw run, and
    trains exactly like the plain loop."""
    module = LitGPT(example=False)
    assert not adam_mini_optimizers(module).is_bound
    t = trainer(max_steps=5)
    t.fit(module)
    opt = t.optimizers[0]
    want = auto_partition(LitGPT().model, (example_tokens(),))  # the LightningModule's network
    assert opt.plan == want and opt.param_groups[0]["param_names"][0] == "embed_tokens.weight"
    ref = plain_loop(5)
    for (name, a), b in zip(module.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_helper_defers_to_the_callback_when_there_is_no_example_input():
    module = LitGPT(example=False)
    cb = AdamMiniCallback(show=False)
    t = trainer(max_steps=2, callbacks=[cb])
    t.fit(module)
    assert t.optimizers[0].plan == cb.plan == auto_partition(LitGPT(), (example_tokens(),))
    assert len(Tokens()) == 64


def test_flattening_strategies_are_refused_with_advice():
    from lightning.pytorch.strategies import FSDPStrategy

    from lightning_adam_mini.lightning.conventions import check_strategy

    with pytest.raises(
        RuntimeError, match="ModelParallelStrategy and apply torch.distributed.fsdp.fully_shard"
    ):
        check_strategy(FSDPStrategy())
