"""step_in_backward: each parameter updated from its gradient hook equals the usual step."""

import lightning.pytorch as pl
import pytest
import torch

from lightning_adam_mini import AdamMini
from lightning_adam_mini.in_backward import check_trainer

from .conftest import batch, lm_loss, tiny_llama, tiny_plan


def test_in_backward_equals_the_usual_step_bit_for_bit_and_frees_grads(twin_models):
    usual_model, hooked_model = twin_models
    kwargs = dict(lr=1e-2, weight_decay=0.1, exp_avg_dtype=None)
    usual = AdamMini(usual_model, partition=tiny_plan(usual_model), **kwargs)
    hooked = AdamMini(hooked_model, partition=tiny_plan(hooked_model), step_in_backward=True, **kwargs)
    for i in range(5):
        usual.zero_grad()
        lm_loss(usual_model, batch(i)).backward()
        usual.step()
        hooked.zero_grad()
        lm_loss(hooked_model, batch(i)).backward()
        assert all(p.grad is None for p in hooked_model.parameters()), "grads must be freed in backward"
        hooked.step()
    for (name, a), b in zip(usual_model.named_parameters(), hooked_model.parameters()):
        assert torch.equal(a, b), name
        assert torch.equal(usual.state[a]["exp_avg_sq"], hooked.state[b]["exp_avg_sq"]), name
    assert not torch.equal(usual_model.embed_tokens.weight, tiny_llama().embed_tokens.weight)


def test_second_backward_before_step_is_refused_as_accumulation():
    model = tiny_llama()
    opt = AdamMini(model, partition=tiny_plan(model), step_in_backward=True)
    lm_loss(model, batch(0)).backward()
    with pytest.raises(RuntimeError, match="accumulation"):
        lm_loss(model, batch(1)).backward()
    opt.step()  # ends the iteration: the next backward updates again
    opt.zero_grad()
    lm_loss(model, batch(2)).backward()
    assert all(p.grad is None for p in model.parameters())


def test_step_in_backward_refuses_compile():
    model = tiny_llama()
    with pytest.raises(ValueError, match="compile"):
        AdamMini(model, partition=tiny_plan(model), step_in_backward=True, compile=True)


@pytest.mark.parametrize(
    ("setting", "culprit"),
    [
        ({"gradient_clip_val": 1.0}, "gradient_clip_val"),
        ({"accumulate_grad_batches": 4}, "accumulate_grad_batches"),
    ],
)
def test_lightning_settings_it_cannot_honour_are_named(setting, culprit):
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, **setting)
    with pytest.raises(ValueError, match=culprit):
        check_trainer(trainer)
    check_trainer(pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False))


def test_lightning_fit_in_backward_equals_the_usual_fit():
    from tests.lightning.lit_gpt import LitGPT, trainer

    usual, hooked = LitGPT(), LitGPT(optimizer_kwargs=dict(step_in_backward=True))
    trainer(max_steps=4).fit(usual)
    hooked_trainer = trainer(max_steps=4)
    hooked_trainer.fit(hooked)
    assert hooked_trainer.optimizers[0]._in_backward is not None  # the hooks did the updates
    for (name, a), b in zip(usual.named_parameters(), hooked.parameters()):
        assert torch.equal(a, b), name


def test_lightning_fit_in_backward_refuses_gradient_clipping():
    from tests.lightning.lit_gpt import LitGPT, trainer

    with pytest.raises(ValueError, match="gradient_clip_val"):
        trainer(max_steps=2, gradient_clip_val=1.0).fit(LitGPT(optimizer_kwargs=dict(step_in_backward=True)))
