"""README claims that no other test guards, each checked against numbers written in the README
(see the claim-by-claim list in the integration notes)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lightning_adam_mini import AdamMini
from lightning_adam_mini.app.models import GPT, Llama, LlamaConfig
from lightning_adam_mini.app.plans import names_plan
from lightning_adam_mini.stats import step_size_stats
from partitioners import BlockLayout, PartitionPlan, PlanEntry, auto_partition
from partitioners.cli import main as lam_partition
from tests.app.conftest import compose_train


def test_lam_partition_gpt2_example(tmp_path, capsys):
    """README, Partition plans: the `lam-partition gpt2-tiny.json` table and its footer."""
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=32)
    path = tmp_path / "gpt2-tiny.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert lam_partition([str(path)]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines() if line}
    assert rows["transformer.wte.weight"] == ["128x64", "embedding", "rows(dim=0)", "128", "export"]
    assert rows["transformer.wpe.weight"] == ["32x64", "embedding", "rows(dim=0)", "32", "export"]
    assert rows["transformer.h.0.ln_1.weight"] == ["64", "norm", "tensor", "1", "export"]
    assert " ".join(rows["transformer.h.0.attn.c_attn.weight"]) == (
        "64x192 qkv segments(dim=1, (q:64/16 + k:64/16 + v:64/1)) 72 export"
    )
    assert rows["transformer.h.0.attn.c_proj.weight"] == ["64x64", "attn_out", "rows(dim=1)", "64", "export"]
    assert rows["transformer.h.0.mlp.c_fc.weight"] == ["64x256", "linear", "rows(dim=1)", "256", "export"]
    assert " ".join(rows["28"]) == "tensors, 110,336 params, 2,549 v values (2.3102% of AdamW's v)"


@pytest.fixture(scope="module")
def default_app_model() -> tuple[GPT, torch.Tensor]:
    """The model and batch shape of the default `lam-train` run (config composed as the CLI does)."""
    cfg = compose_train()
    assert (cfg.data.batch_size, cfg.data.block_size, cfg.trainer.max_steps) == (32, 64, 400)
    assert cfg.optimizer.lr == 5e-3  # "the best common value, 5e-3, is the shipped default"
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    return model, torch.zeros(2, cfg.data.block_size, dtype=torch.long)


def test_default_run_model_size_and_state_share(default_app_model):
    """README, Hydra app: 0.84M parameters; 9,705 block values instead of 834,304 v values; 50.6%
    of AdamW's optimizer state."""
    model, x = default_app_model
    plan = auto_partition(model, (x,))
    assert plan.num_params == sum(p.numel() for p in model.parameters()) == 834_304
    assert plan.num_blocks == 9_705
    fp32 = 4  # m per element + one v per block, against AdamW's m and v per element
    assert round(100 * (plan.num_params + plan.num_blocks) * fp32 / (2 * plan.num_params * fp32), 1) == 50.6


def test_name_rules_on_the_default_gpt(default_app_model):
    """README, Evidence: the name rules make c_attn, attn.c_proj and wpe one block each and block
    the Conv1D MLP weights by input row (dim 0); the graph plan uses heads in c_attn and dim 1."""
    model, x = default_app_model
    names, graph = names_plan(model, (x,)), auto_partition(model, (x,))
    for name in (
        "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.attn.c_proj.weight",
        "transformer.wpe.weight",
    ):
        assert names[name].layout == BlockLayout.tensor(), name
    assert names["transformer.h.0.mlp.c_fc.weight"].layout == BlockLayout.rows(0)
    assert graph["transformer.h.0.mlp.c_fc.weight"].layout == BlockLayout.rows(1)
    assert graph["transformer.h.0.attn.c_attn.weight"].layout == BlockLayout.segmented(
        [(128, 32, "q"), (128, 32, "k"), (128, 1, "v")], axis=1
    )


def test_step_size_of_token_rows_never_seen_is_lr_over_eps():
    """README, logged values: `step_size/embedding/max = lr/eps` for rows whose v is still 0, and
    lr / (sqrt(v_hat) + eps) for the rows that were used."""
    emb = torch.nn.Embedding(4, 2)
    plan = PartitionPlan({"weight": PlanEntry((4, 2), "embedding", BlockLayout.rows(0))})
    lr, eps = 3e-3, 1e-8
    opt = AdamMini(emb, partition=plan, lr=lr, eps=eps, betas=(0.9, 0.999))
    out = emb(torch.tensor([0, 1]))  # rows 2 and 3 get a zero gradient
    (out * torch.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    opt.step()
    stats = step_size_stats(opt)
    assert stats["adam_mini/step_size/embedding/max"] == pytest.approx(lr / eps, rel=1e-6)
    # step 1: v_hat is the block's mean of g^2: (1+4)/2 for row 0, (9+16)/2 for row 1
    assert stats["adam_mini/step_size/embedding/min"] == pytest.approx(lr / (12.5**0.5 + eps), rel=1e-6)
    assert stats["adam_mini/params/embedding"] == 1.0


def test_hydra_partial_optimizer_outside_lightning():
    """README, Hydra: `instantiate(cfg.optimizer)(model, example_inputs=(x,))` works outside Lightning."""
    cfg = OmegaConf.create(
        {
            "optimizer": {
                "_target_": "lightning_adam_mini.AdamMini",
                "_partial_": True,
                "lr": 3e-4,
                "weight_decay": 0.1,
            }
        }
    )
    torch.manual_seed(0)
    model = Llama(
        LlamaConfig(vocab_size=32, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=32, max_seq_len=8)
    )
    x = torch.randint(0, 32, (2, 8))
    opt = instantiate(cfg.optimizer)(model, example_inputs=(x,))
    assert isinstance(opt, AdamMini) and opt.plan == auto_partition(model, (x,))
    assert opt.param_groups[0]["weight_decay"] == 0.1 and float(opt.param_groups[0]["lr"]) == 3e-4
    before = [p.detach().clone() for p in model.parameters()]
    model(x).sum().backward()
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_benchmark_model_state_share():
    """README, Performance: for the step benchmark's Llama (dim 512, 8 layers, vocab 8192, 31.2M
    params) Adam-mini keeps 50.08% of AdamW's state bytes, 25.08% with a bf16 first moment."""
    cfg = LlamaConfig(vocab_size=8192, dim=512, n_layers=8, n_heads=8, n_kv_heads=4, hidden_dim=1344)
    with torch.device("meta"):
        model = Llama(cfg)
    plan = auto_partition(model, (torch.zeros(1, 16, dtype=torch.long),))
    n, blocks, tensors = plan.num_params, plan.num_blocks, len(plan)
    assert round(n / 1e6, 1) == 31.2
    step = 4 * tensors  # one fp32 step counter per tensor in both optimizers
    adamw = 2 * 4 * n + step
    assert round(100 * (4 * n + 4 * blocks + step) / adamw, 2) == 50.08
    assert round(100 * (2 * n + 4 * blocks + step) / adamw, 2) == 25.08
