"""What the quality study (benchmarks/quality_study.sh) rests on: a test split no choice saw, the
official package inside the app, the count of second-moment values, and the report's arithmetic."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from adam_mini import Adam_mini
from hydra.utils import instantiate

from lightning_adam_mini import AdamMini
from lightning_adam_mini.app.plans import auto_plan, build_optimizer, builds_from_model
from lightning_adam_mini.app.text_data import ByteTextDataModule

from .conftest import compose_train
from .test_train import SMOKE_PARAMS, _train_in_process

ROOT = Path(__file__).resolve().parents[2]


def _report_module():
    spec = importlib.util.spec_from_file_location("quality_report", ROOT / "benchmarks" / "quality_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_test_split_follows_val_and_the_default_has_none(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(bytes(ord("a") + i % 26 for i in range(10_000)))
    data = ByteTextDataModule(str(corpus), block_size=8, batch_size=4, val_fraction=0.1, test_fraction=0.2)
    data.setup("fit")
    assert data.train_set is not None and data.val_set is not None and data.test_set is not None
    # 10,000 bytes: train 7,000 | val 1,000 | test 2,000, in that order
    tokens = data.tokens
    assert torch.equal(data.train_set.tokens, tokens[:7000])
    assert torch.equal(data.val_set.tokens, tokens[7000:8000])
    assert torch.equal(data.test_set.tokens, tokens[8000:])
    default = ByteTextDataModule(str(corpus), block_size=8, batch_size=4)
    default.setup("fit")
    assert default.val_set is not None and torch.equal(default.val_set.tokens, tokens[9000:])
    assert not default.has_test_split
    with pytest.raises(ValueError, match="no test split"):
        default.test_dataloader()


@pytest.mark.parametrize("fraction", [-0.1, 0.9, float("nan")])
def test_bad_test_fraction_is_refused(fraction):
    with pytest.raises(ValueError, match="data.test_fraction"):
        ByteTextDataModule(test_fraction=fraction)


def test_a_run_with_a_test_split_reports_its_loss(tmp_path, tiny):
    steps = ["trainer.max_steps=2", "trainer.limit_val_batches=2", "plot=false", "data.test_fraction=0.1"]
    summary = _train_in_process([*tiny, *steps], tmp_path / "run")
    test, val = summary["final_test_loss"], summary["final_val_loss"]
    assert math.isfinite(test) and math.isfinite(val) and test != val
    without = _train_in_process([*tiny, "trainer.max_steps=1", "plot=false"], tmp_path / "run2")
    assert math.isnan(without["final_test_loss"])


def test_adamw_keeps_one_second_moment_per_element(tmp_path, tiny):
    steps = ["trainer.max_steps=1", "trainer.limit_val_batches=1", "plot=false", "optimizer=adamw"]
    summary = _train_in_process([*tiny, *steps], tmp_path / "run")
    assert summary["second_moment_values"] == SMOKE_PARAMS


def _llama_losses(option: str, steps: int = 8) -> list[float]:
    """Train losses of the first ``steps`` steps of llama_text (small) with optimizer=<option>."""
    overrides = [
        "experiment=llama_text",
        f"optimizer={option}",
        "model.cfg.n_layers=1",
        "model.cfg.dim=64",
        "model.cfg.hidden_dim=96",
        "model.cfg.max_seq_len=16",
        "optimizer.lr=1e-2",
    ]
    cfg = compose_train(overrides)
    torch.manual_seed(0)
    net = instantiate(cfg.model)
    factory = instantiate(cfg.optimizer)
    x = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(2))
    opt = build_optimizer(factory, net, x, instantiate(cfg.partition))
    assert isinstance(opt, Adam_mini if option == "adam_mini_official" else AdamMini)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_official_optimizer_in_the_app_matches_ours_on_llama():
    """The official package (an independent implementation) and ours, both from the app's
    configs, give the same losses on the Llama demo, whose names the official rules know."""
    official = _llama_losses("adam_mini_official")
    assert official[-1] < official[0] - 0.5  # it trains (lr 1e-2, 8 steps on one batch)
    for option in ("adam_mini_names", "adam_mini"):
        assert _llama_losses(option) == pytest.approx(official, rel=1e-5, abs=1e-6), option


def test_official_factory_takes_the_model():
    factory = instantiate(compose_train(["optimizer=adam_mini_official"]).optimizer)
    assert builds_from_model(factory)
    assert not builds_from_model(instantiate(compose_train(["optimizer=adamw"]).optimizer))
    assert not builds_from_model(instantiate(compose_train(["optimizer=adam_mini"]).optimizer))


def _metrics(root: Path, name: str, optimizer: str, model: str, seed: int, steps: int, test: float, **extra):
    d = root / name
    d.mkdir(parents=True)
    run = {
        "choices": {"optimizer": optimizer, "model": model},
        "seed": seed,
        "steps": steps,
        "lr": extra.pop("lr", 5e-3),
        "final_val_loss": extra.pop("val", test),
        "final_test_loss": test,
        "num_params": 1000,
        "second_moment_values": 10,
        "train_curve": [],
        **extra,
    }
    (d / "metrics.json").write_text(json.dumps(run))


def test_report_pairs_seeds_and_picks_the_lr_on_val(tmp_path):
    report = _report_module()
    sweep = tmp_path / "sweep"
    # seed 0: 2.0 vs 1.9 (+0.1), seed 1: 2.2 vs 2.3 (-0.1), seed 2: 2.1 vs 1.8 (+0.3)
    for seed, (mini, adamw) in enumerate([(2.0, 1.9), (2.2, 2.3), (2.1, 1.8)]):
        _metrics(sweep, f"m{seed}", "adam_mini", "gpt_tiny", seed, 400, mini)
        _metrics(sweep, f"w{seed}", "adamw", "gpt_tiny", seed, 400, adamw)
    (row,) = report.gap_rows(report.runs_under(sweep))
    assert row["gap"] == pytest.approx([0.1, -0.1, 0.3])
    mean, std = report.mean_std(row["gap"])
    assert mean == pytest.approx(0.1) and std == pytest.approx(0.2)
    assert "| 1/3 |" in report.gap_table([row])[2]  # Adam-mini ahead on one seed of three
    tune = tmp_path / "tune"
    # the lowest *validation* loss wins, whatever the test loss says
    for i, (lr, val, test) in enumerate([(1e-3, 2.5, 1.0), (3e-3, 2.0, 3.0), (1e-2, float("nan"), 0.5)]):
        _metrics(tune, f"t{i}", "adamw", "gpt_tiny", 0, 400, test, lr=lr, val=val)
    assert report.best_lr(tune, "adamw", "gpt_tiny") == 3e-3


# per layer (2 layers): the GPT's fused c_attn and c_proj; the Llama's wq, wk, wv and wo
@pytest.mark.parametrize(
    ("model", "glob", "moved"),
    [("gpt_micro", "*.attn.*.weight", 4), ("llama_micro", "*.self_attn.*.weight", 8)],
)
def test_the_role_rule_selects_what_the_studys_name_globs_did(model, glob, moved):
    """README: `{has_role: [query, key, value, qkv, attn_out], layout: element}` moves the same
    tensors to per-element v as the study's name glob for each layout."""
    cfg = compose_train([f"model={model}"])
    torch.manual_seed(0)
    net = instantiate(cfg.model)
    x = torch.zeros(1, 8, dtype=torch.long)
    roles = ["query", "key", "value", "qkv", "attn_out"]
    by_role = auto_plan(net, (x,), overrides=[{"has_role": roles, "layout": "element"}])
    by_name = auto_plan(net, (x,), overrides=[{"match": glob, "layout": "element"}])
    assert by_role == by_name
    assert sum(e.decided_by == "rule" for e in by_role.values()) == moved
