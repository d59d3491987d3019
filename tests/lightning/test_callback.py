"""`AdamMiniCallback`: plan table at fit start, per-step metrics, plan in checkpoints."""

from __future__ import annotations

import logging

import pytest
import torch

from lightning_adam_mini import AdamMini, AdamMiniCallback, auto_partition
from lightning_adam_mini.lightning import table
from lightning_adam_mini.stats import role_fractions
from partitioners import BlockLayout, PlanMismatchError
from tests.lightning.lit_gpt import LitGPT, example_tokens, trainer
from tests.lightning.memory_logger import MemoryLogger


def expected_plan():
    return auto_partition(LitGPT(), (example_tokens(),))


def test_rich_table_at_fit_start(capsys):
    trainer(max_steps=1, callbacks=[AdamMiniCallback()]).fit(LitGPT())
    out = capsys.readouterr().out
    assert "Adam-mini partition" in out and "┃ param" in out
    assert "model.layers.0.self_attn.q_proj.weight" in out and "heads(dim=0, size=8)" in out
    assert expected_plan().summary() in out
    assert out.count("Adam-mini partition") == 1


@pytest.mark.parametrize("why", ["rich=False", "rich not installed"])
def test_plain_text_table_without_rich(caplog, monkeypatch, why):
    if why == "rich not installed":
        monkeypatch.setattr(table, "_RICH_AVAILABLE", False)
    # Lightning stops propagation when it is imported before a root handler exists (the dev-extra
    # check in tests/conftest.py imports it early): let caplog see its records either way.
    monkeypatch.setattr(logging.getLogger("lightning.pytorch"), "propagate", True)
    with caplog.at_level(logging.INFO):
        trainer(max_steps=1, callbacks=[AdamMiniCallback(rich=why != "rich=False")]).fit(LitGPT())
    text = caplog.text
    assert "Adam-mini partition" in text and "┃" not in text
    assert str(expected_plan()) in text


def test_logs_step_sizes_and_role_shares_through_the_trainer_logger():
    logger = MemoryLogger()
    module = LitGPT()
    t = trainer(max_steps=6, logger=logger, log_every_n_steps=2, callbacks=[AdamMiniCallback(show=False)])
    t.fit(module)
    logged = logger.with_prefix("adam_mini/")
    assert [s for s, _ in logged] == [2, 4, 6]
    step, last = logged[-1]
    roles = set(role_fractions(t.optimizers[0].plan))
    assert roles == {"embedding", "norm", "query", "key", "value", "attn_out", "linear", "output"}
    for role in roles:
        lo, mid, hi = (last[f"adam_mini/step_size/{role}/{s}"] for s in ("min", "median", "max"))
        assert 0 < lo <= mid <= hi
    assert sum(last[f"adam_mini/params/{r}"] for r in roles) == pytest.approx(1.0)

    # the numbers are lr / (sqrt(v / (1 - beta2^t)) + eps) of the optimizer's own state
    opt: AdamMini = t.optimizers[0]
    q = module.model.layers[0].self_attn.q_proj.weight
    state = opt.state[q]
    lr, (_, beta2), eps = float(opt.param_groups[0]["lr"]), opt.defaults["betas"], opt.defaults["eps"]
    want = lr / ((state["exp_avg_sq"] / (1 - beta2**step)).sqrt() + eps)
    assert last["adam_mini/step_size/query/max"] == pytest.approx(want.max().item(), rel=1e-6)
    assert last["adam_mini/step_size/query/min"] == pytest.approx(want.min().item(), rel=1e-6)


def test_first_training_batch_is_traced_when_there_is_no_example_input():
    module = LitGPT(example=False)
    cb = AdamMiniCallback(show=False)
    t = trainer(max_steps=2, callbacks=[cb])
    t.fit(module)
    assert cb.plan == expected_plan() == t.optimizers[0].plan


def test_checkpoint_carries_the_plan_once_and_a_foreign_plan_is_refused(tmp_path):
    ckpt = tmp_path / "a.ckpt"
    t = trainer(max_steps=2, callbacks=[AdamMiniCallback(show=False)])
    t.fit(LitGPT())
    t.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)
    (groups,) = [s["param_groups"] for s in saved["optimizer_states"]]
    assert {n: e for g in groups for n, e in g["partition_plan"].items()} == expected_plan().to_dict()
    assert "adam_mini_partition_plan" not in saved  # the callback keeps no second copy

    # same model, same plan: resumes
    t2 = trainer(max_steps=3, callbacks=[AdamMiniCallback(show=False)])
    t2.fit(LitGPT(), ckpt_path=ckpt)
    assert t2.global_step == 3

    # a checkpoint written before the plan lived in the optimizer state only (with the callback's
    # own copy under a top-level key) still loads
    saved["adam_mini_partition_plan"] = expected_plan().to_dict()
    torch.save(saved, tmp_path / "old.ckpt")
    t_old = trainer(max_steps=3, callbacks=[AdamMiniCallback(show=False)])
    t_old.fit(LitGPT(), ckpt_path=tmp_path / "old.ckpt")
    assert t_old.global_step == 3

    # same weights, another partition (values per row instead of per head): refused
    other = expected_plan().replace("model.layers.0.self_attn.q_proj.weight", layout=BlockLayout.rows(0))
    t3 = trainer(max_steps=3, callbacks=[AdamMiniCallback(partition=other, show=False)])
    with pytest.raises(
        PlanMismatchError, match=r"checkpoint's plan differs at 'model.layers.0.self_attn.q_proj"
    ):
        t3.fit(LitGPT(), ckpt_path=ckpt)


def test_callback_without_an_adam_mini_says_so():
    class WithAdamW(LitGPT):
        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters())

    with pytest.raises(RuntimeError, match="no AdamMini among the Trainer's optimizers"):
        trainer(max_steps=1, callbacks=[AdamMiniCallback()]).fit(WithAdamW())


def test_resume_without_example_input_loads_the_state_when_the_first_batch_binds(tmp_path):
    """The optimizer state is restored before any batch, while the optimizer is still unbound: it
    is kept, then loaded (and its plan checked) when the first batch binds the optimizer."""
    t = trainer(max_steps=2, callbacks=[AdamMiniCallback(show=False)])
    t.fit(LitGPT(example=False, n=16, batch_size=16))
    t.save_checkpoint(tmp_path / "a.ckpt")
    cb = AdamMiniCallback(show=False)
    t2 = trainer(max_steps=4, callbacks=[cb])
    module = LitGPT(example=False, n=16, batch_size=16)
    t2.fit(module, ckpt_path=tmp_path / "a.ckpt")
    opt = t2.optimizers[0]
    assert t2.global_step == 4 and cb.plan == expected_plan() == opt.plan
    assert all(float(opt.state[p]["step"]) == 4 for p in module.parameters())  # 2 loaded + 2 trained

    other = expected_plan().replace("model.layers.0.self_attn.q_proj.weight", layout=BlockLayout.rows(0))
    t3 = trainer(max_steps=4, callbacks=[AdamMiniCallback(partition=other, show=False)])
    with pytest.raises(
        PlanMismatchError, match="checkpoint's plan differs at 'model.layers.0.self_attn.q_proj"
    ):
        t3.fit(LitGPT(example=False, n=16, batch_size=16), ckpt_path=tmp_path / "a.ckpt")


def test_an_optimizer_with_its_own_plan_is_what_the_callback_reports():
    own = expected_plan().replace("model.layers.0.self_attn.v_proj.weight", layout=BlockLayout.tensor())
    cb = AdamMiniCallback(show=False)
    trainer(max_steps=1, callbacks=[cb]).fit(LitGPT(optimizer_kwargs={"partition": own}))
    assert cb.plan == own
    with pytest.raises(PlanMismatchError, match="give the partition to one of them only"):
        trainer(max_steps=1, callbacks=[AdamMiniCallback(partition=expected_plan(), show=False)]).fit(
            LitGPT(optimizer_kwargs={"partition": own})
        )


class BoundAtFitStart(LitGPT):
    """Records whether the optimizer was bound when fit started (the module's hook runs after the
    callbacks')."""

    def on_fit_start(self) -> None:
        self.bound_at_fit_start = self.trainer.optimizers[0].is_bound


def test_example_input_option_traces_at_setup():
    given = BoundAtFitStart(example=False)
    cb = AdamMiniCallback(
        example_input=(example_tokens(3),), show=False
    )  # a tuple: unpacked as forward's args
    trainer(max_steps=2, callbacks=[cb]).fit(given)
    assert given.bound_at_fit_start and cb.plan == expected_plan()

    without = BoundAtFitStart(example=False)
    trainer(max_steps=2, callbacks=[AdamMiniCallback(show=False)]).fit(without)
    assert not without.bound_at_fit_start  # traced from the first batch instead


class DictBatches(LitGPT):
    """Batches are dicts, so the default input picker (a tensor, or the first element) can't tell."""

    def train_dataloader(self):
        loader = super().train_dataloader()
        collate = loader.collate_fn
        return torch.utils.data.DataLoader(
            loader.dataset,
            batch_size=self.batch_size,
            collate_fn=lambda items: dict(zip(("tokens", "targets"), collate(items))),
        )

    def training_step(self, batch, batch_idx):
        return self.loss((batch["tokens"], batch["targets"]))


def test_input_from_batch_picks_the_model_input():
    picked = []

    def tokens_of(batch):
        picked.append(batch["tokens"].shape)
        return batch["tokens"]

    cb = AdamMiniCallback(input_from_batch=tokens_of, show=False)
    t = trainer(max_steps=2, callbacks=[cb])
    t.fit(DictBatches(example=False))
    assert picked == [torch.Size([8, 8])]  # the first batch only
    assert cb.plan == expected_plan() == t.optimizers[0].plan

    with pytest.raises(TypeError, match=r"batch of type dict.*input_from_batch=lambda batch"):
        trainer(max_steps=1, callbacks=[AdamMiniCallback(show=False)]).fit(DictBatches(example=False))


def test_log_every_n_steps_option_overrides_the_trainer():
    logger = MemoryLogger()
    cb = AdamMiniCallback(log_every_n_steps=3, show=False)
    trainer(max_steps=6, logger=logger, log_every_n_steps=50, callbacks=[cb]).fit(LitGPT())
    assert [s for s, _ in logger.with_prefix("adam_mini/")] == [3, 6]
    with pytest.raises(ValueError, match="log_every_n_steps must be >= 1, got 0"):
        AdamMiniCallback(log_every_n_steps=0)


class NaNGradAtEvenBatches(LitGPT):
    """Puts one NaN into the query weight's gradient on batches 0 and 2."""

    def on_after_backward(self) -> None:
        if self.trainer.global_step in (0, 2):
            grad = self.model.layers[0].self_attn.q_proj.weight.grad
            grad[0, 0] = float("nan")


def test_skipped_nonfinite_updates_are_logged():
    logger = MemoryLogger()
    module = NaNGradAtEvenBatches(optimizer_kwargs={"nonfinite": "skip"})
    q = module.model.layers[0].self_attn.q_proj.weight
    trainer(max_steps=4, logger=logger, log_every_n_steps=2, callbacks=[AdamMiniCallback(show=False)]).fit(
        module
    )
    logged = [(s, m["adam_mini/skipped_nonfinite"]) for s, m in logger.with_prefix("adam_mini/skipped")]
    assert logged == [(2, 1.0), (4, 2.0)]  # one skipped update per poisoned batch, counted
    assert torch.isfinite(q).all()
