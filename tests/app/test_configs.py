"""The config tree: every group option composes and instantiates; bad overrides fail early."""

from __future__ import annotations

import functools

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from lightning_adam_mini import AdamMini, PartitionPlan
from lightning_adam_mini.app.plans import build_optimizer

from .conftest import compose_train, group_options, run_lam_train

GROUPS = ["model", "data", "optimizer", "partition", "trainer", "logger", "callbacks", "experiment"]
MODEL_DATA = {"gpt_tiny": "text", "llama_tiny": "text", "convnet": "shapes"}


def test_every_group_has_the_required_options():
    assert {"adam_mini", "adamw", "adam_mini_names"} <= set(group_options("optimizer"))
    assert {"auto", "names", "pinned"} <= set(group_options("partition"))
    assert {"gpt_tiny", "llama_tiny", "convnet"} <= set(group_options("model"))
    assert {"cpu", "gpu", "ddp", "fsdp"} <= set(group_options("trainer"))
    assert {"csv", "tensorboard"} <= set(group_options("logger"))
    assert group_options("data") and group_options("experiment")


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in group_options(g)])
def test_every_option_composes(override):
    extra = ["partition.path=plan.yaml"] if override == "partition=pinned" else []
    cfg = compose_train([override, *extra])
    OmegaConf.to_container(cfg, resolve=False, throw_on_missing=True)
    for key in ("model", "data", "optimizer", "partition", "trainer"):
        assert "_target_" in cfg[key], (override, key)


@pytest.mark.parametrize("model", sorted(MODEL_DATA))
def test_model_data_optimizer_instantiate_and_step(model):
    cfg = compose_train([f"model={model}", f"data={MODEL_DATA[model]}", "data.batch_size=4"])
    data = instantiate(cfg.data)
    data.setup("fit")
    net = instantiate(cfg.model)
    assert isinstance(net, nn.Module)
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == data.example_input().shape and x.dtype == data.example_input().dtype
    for option in ("adam_mini", "adam_mini_names", "adamw"):
        ocfg = compose_train([f"model={model}", f"optimizer={option}"])
        factory = instantiate(ocfg.optimizer)
        assert isinstance(factory, functools.partial)
        opt = build_optimizer(factory, net, x, instantiate(ocfg.partition))
        assert isinstance(opt, AdamMini) == (option != "adamw")
        assert opt.defaults["betas"] == (0.9, 0.95) or list(opt.defaults["betas"]) == [0.9, 0.95]
        logits = net(x)
        torch.nn.functional.cross_entropy(logits.flatten(0, -2), y.flatten()).backward()
        opt.step()
        opt.zero_grad()


def test_partition_options_give_plans():
    cfg = compose_train(["model=gpt_tiny"])
    net = instantiate(cfg.model)
    x = torch.zeros(2, 16, dtype=torch.long)
    auto = instantiate(compose_train(["partition=auto"]).partition)(net, (x,))
    names = instantiate(compose_train(["partition=names"]).partition)(net, (x,))
    assert isinstance(auto, PartitionPlan) and isinstance(names, PartitionPlan)
    assert set(auto) == set(names) == {n for n, _ in net.named_parameters()}
    # adam_mini_names is adam_mini with the partition group switched to the name rules
    both = compose_train(["optimizer=adam_mini_names"])
    assert both.partition._target_.endswith("names_plan")
    assert both.optimizer._target_ == "lightning_adam_mini.AdamMini"


def test_pinned_partition_round_trips(tmp_path):
    net = instantiate(compose_train([]).model)
    plan = instantiate(compose_train([]).partition)(net, (torch.zeros(2, 8, dtype=torch.long),))
    path = tmp_path / "plan.yaml"
    path.write_text(plan.to_yaml())
    pinned = instantiate(compose_train(["partition=pinned", f"partition.path={path}"]).partition)
    assert pinned(net, ()) == plan
    with pytest.raises(FileNotFoundError, match="partition.path"):
        instantiate(compose_train(["partition=pinned", "partition.path=nope.yaml"]).partition)(net, ())


@pytest.mark.parametrize("option", ["default", "cpu", "ddp"])
def test_trainer_instantiates_on_cpu(option, tmp_path):
    cfg = compose_train([f"trainer={option}", f"trainer.default_root_dir={tmp_path}"])
    extra = {"accelerator": "cpu", "devices": 2} if option == "ddp" else {}
    trainer = instantiate(cfg.trainer, logger=False, **extra)
    assert trainer.max_steps == cfg.trainer.max_steps


def test_fsdp_strategy_instantiates():
    cfg = compose_train(["trainer=fsdp"])
    from lightning.pytorch.strategies import ModelParallelStrategy

    strategy = instantiate(cfg.trainer.strategy)  # FSDP2 (fully_shard), which AdamMini supports
    assert isinstance(strategy, ModelParallelStrategy)
    assert (strategy._data_parallel_size, strategy._tensor_parallel_size) == (2, 1)


def test_loggers_instantiate(tmp_path):
    cfg = compose_train(["logger=csv", f"logger.csv.save_dir={tmp_path}"])
    from lightning.pytorch.loggers import CSVLogger

    assert isinstance(instantiate(cfg.logger.csv), CSVLogger)
    cfg = compose_train(["logger=tensorboard", f"logger.tensorboard.save_dir={tmp_path}"])
    instantiate(cfg.logger.tensorboard)


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.lr=abc", "optimizer.lr"),
        ("optimizer.betas=fast", "optimizer.betas"),
        ("trainer.max_steps=ten", "trainer.max_steps"),
        ("model.cfg.n_layer=1.5", "model.cfg.n_layer"),
        ("data.block_size=big", "data.block_size"),
        ("seed=x", "seed"),
        ("optimizer.lrr=0.1", "lrr"),
    ],
)
def test_bad_override_fails_at_compose_naming_the_key(override, key):
    with pytest.raises(ConfigCompositionException) as err:
        compose_train([override])
    text = f"{err.value} {err.value.__cause__}"
    assert key in text


def test_bad_override_fails_before_training_from_the_cli(tmp_path):
    proc = run_lam_train(["optimizer.lr=abc"], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "optimizer.lr" in proc.stderr and "abc" in proc.stderr
    assert "Epoch" not in proc.stdout + proc.stderr
    assert not (tmp_path / "outputs").exists()
