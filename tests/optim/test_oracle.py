"""AdamMini with the name partition reproduces the official Adam-mini v1.1.1 (the test oracle)."""

import copy

import adam_mini
import pytest
import torch

from lightning_adam_mini import AdamMini
from lightning_adam_mini.app.models import Llama, LlamaConfig

from .conftest import batch, lm_loss, max_abs_diff, tiny_plan

CFG = LlamaConfig(vocab_size=96, dim=64, n_layers=2, n_heads=8, n_kv_heads=2, hidden_dim=96, max_seq_len=32)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_official_adam_mini_on_llama(weight_decay):
    torch.manual_seed(0)
    ours = Llama(CFG)
    theirs = copy.deepcopy(ours)
    initial = copy.deepcopy(ours)
    plan = tiny_plan(ours)
    # The plan really exercises every official rule: per-head q/k (GQA), per-row, whole, element.
    assert {e.role for e in plan.values()} == {
        "embedding",
        "query",
        "key",
        "value",
        "attn_out",
        "linear",
        "norm",
        "output",
    }
    assert str(plan["layers.0.self_attn.k_proj.weight"].layout) == "heads(dim=0, size=8)"
    opt = AdamMini(ours, partition=plan, lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay)
    ref = adam_mini.Adam_mini(
        theirs.named_parameters(),
        lr=3e-3,
        betas=(0.9, 0.95),
        eps=1e-8,
        weight_decay=weight_decay,
        dim=CFG.dim,
        n_heads=CFG.n_heads,
        n_kv_heads=CFG.n_kv_heads,
        verbose=False,
    )
    worst = 0.0
    for i in range(20):
        for model, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            lm_loss(model, batch(i, CFG)).backward()
            o.step()
        worst = max(worst, max_abs_diff(ours, theirs))
    assert worst <= 1e-6
    # and the models really moved (a test that can't fail is a defect)
    assert max_abs_diff(ours, initial) > 1e-2
