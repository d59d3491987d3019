"""litgpt's own pretraining entry (``litgpt.pretrain.setup``) with
``optimizer="lightning_adam_mini.AdamMini"``: litgpt builds ``AdamMini(model.parameters())`` and
never binds it; the optimizer binds itself. Compared with the same litgpt run whose optimizer was
bound explicitly (``bind(gpt, example_inputs=...)``) before training."""

from __future__ import annotations

import sys
from pathlib import Path

import litgpt.pretrain
import pytest
import torch
from litgpt import GPT, Config
from litgpt.args import EvalArgs, TrainArgs
from litgpt.data import DataModule
from torch.utils.data import DataLoader

from lightning_adam_mini import AdamMini, auto_partition

CONFIG = Config(
    name="tiny", block_size=16, vocab_size=64, padding_multiple=64, n_layer=1, n_head=4, n_embd=32
)
STEPS, BATCH = 3, 4


class Counting(DataModule):
    """Sequences of ``block_size + 1`` tokens, a noisy counting pattern (no tokenizer, no download)."""

    def connect(self, tokenizer=None, batch_size: int = 1, max_seq_length: int | None = None) -> None:
        self.batch_size, self.length = batch_size, (max_seq_length or CONFIG.block_size) + 1

    def _loader(self, seed: int) -> DataLoader:
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, 64, (32, 1), generator=g)
        sequences = list((start + torch.arange(self.length)) % 64)
        return DataLoader(sequences, batch_size=self.batch_size)  # pyright: ignore[reportArgumentType]

    def train_dataloader(self) -> DataLoader:
        return self._loader(0)

    def val_dataloader(self) -> DataLoader:
        return self._loader(1)


Params = dict[str, torch.Tensor]


def pretrain(out_dir: Path, monkeypatch, bind_first: bool) -> tuple[Params, Params, AdamMini]:
    """litgpt's pretraining run: the initial and final weights, and the optimizer. With
    ``bind_first``, the optimizer is bound explicitly to the GPT before training (the reference)."""
    optimizers: list[AdamMini] = []
    initial: Params = {}
    fit = litgpt.pretrain.fit

    def watched_fit(*args, state, **kwargs):
        opt = state["optimizer"].optimizer  # fabric.setup_optimizers wraps it
        assert isinstance(opt, AdamMini) and not opt.is_bound
        gpt = next(m for m in state["model"].modules() if isinstance(m, GPT))
        initial.update((n, p.detach().clone()) for n, p in gpt.named_parameters())
        if bind_first:
            opt.bind(gpt, example_inputs=(torch.zeros(BATCH, CONFIG.block_size, dtype=torch.long),))
        optimizers.append(opt)
        return fit(*args, state=state, **kwargs)

    monkeypatch.setattr(litgpt.pretrain, "fit", watched_fit)
    monkeypatch.setattr(sys, "argv", ["litgpt", "tiny"])  # it saves its hyperparameters from the command line
    litgpt.pretrain.setup(
        model_name="tiny",
        model_config=CONFIG,
        out_dir=out_dir,
        precision="32-true",
        data=Counting(),
        train=TrainArgs(
            global_batch_size=BATCH,
            micro_batch_size=BATCH,
            max_tokens=STEPS * BATCH * CONFIG.block_size,
            lr_warmup_steps=1,
            save_interval=None,
            log_interval=1,
            max_norm=1.0,
        ),
        eval=EvalArgs(interval=1000, max_iters=1, final_validation=False),
        optimizer="lightning_adam_mini.AdamMini",
        devices=1,
        logger_name="csv",
    )
    (opt,) = optimizers
    return initial, torch.load(out_dir / "final" / "lit_model.pth", weights_only=False)["model"], opt


@pytest.fixture(autouse=True)
def eager_compile(monkeypatch):
    """litgpt compiles the model; the eager backend keeps dynamo (and the OptimizedModule wrapper
    the owner is found through) without Inductor's minutes of CPU code generation."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compile_(model, backend="eager"))


def test_pretrain_with_the_optimizer_string_binds_itself(tmp_path, monkeypatch):
    _, reference, explicit = pretrain(tmp_path / "explicit", monkeypatch, bind_first=True)
    initial, trained, opt = pretrain(tmp_path / "self_bound", monkeypatch, bind_first=False)
    assert opt.is_bound and float(opt.state[opt.param_groups[0]["params"][0]]["step"]) == STEPS
    assert opt.plan == explicit.plan == auto_partition(GPT(CONFIG), (torch.zeros(1, 16, dtype=torch.long),))
    assert opt.plan["transformer.h.0.attn.qkv.weight"].role == "qkv"
    assert reference.keys() == trained.keys()
    assert min((trained[n] - initial[n]).abs().max().item() for n in initial) > 1e-4  # all trained
    for name in reference:
        torch.testing.assert_close(trained[name], reference[name], rtol=0, atol=1e-6, msg=name)
