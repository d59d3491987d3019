"""Structured configs: the types behind ``configs/``, registered in Hydra's ConfigStore.

Each YAML option extends one of these schemas (``defaults: [<name>_schema, _self_]``), so a wrong
type or an unknown key fails while Hydra composes the config, before anything is built or
trained, with a message naming the key (``optimizer.lr=abc`` -> "Value 'abc' ... could not be
converted to Float ... full_key: optimizer.lr"). Model schemas are generated from the models' own
config dataclasses, so the two can't drift apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from .models import ConvNetConfig, GPTConfig, LlamaConfig


# ---- top level ---------------------------------------------------------------------------------
@dataclass
class TrainSchema:
    task_name: str = "train"
    seed: int = 0
    plot: bool = True
    model: Any = MISSING
    data: Any = MISSING
    optimizer: Any = MISSING
    partition: Any = None
    scheduler: Any = None
    trainer: Any = MISSING
    logger: Any = None
    callbacks: Any = None
    #: a Lightning checkpoint to resume from, e.g. the ``checkpoints/interrupted.ckpt`` that a
    #: run stopped by SIGTERM writes: ``lam-train ckpt_path=<run dir>/checkpoints/interrupted.ckpt``
    ckpt_path: str | None = None


# ---- optimizer ---------------------------------------------------------------------------------
@dataclass
class OptimizerSchema:
    _target_: str = MISSING
    _partial_: bool = True
    _convert_: str = "all"  # betas arrive as a plain list, not a ListConfig
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class AdamMiniSchema(OptimizerSchema):
    _target_: str = "lightning_adam_mini.AdamMini"
    compile: bool = False


@dataclass
class AdamWSchema(OptimizerSchema):
    _target_: str = "torch.optim.AdamW"


@dataclass
class OfficialAdamMiniSchema(OptimizerSchema):
    _target_: str = "lightning_adam_mini.app.official.official_adam_mini"
    dim: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    verbose: bool = True


# ---- partition (factories called as f(model, example_inputs) -> PartitionPlan) ---------------------
@dataclass
class AutoPartitionSchema:
    _target_: str = "lightning_adam_mini.app.plans.auto_plan"
    _partial_: bool = True
    _convert_: str = "all"  # rules arrive as plain dicts
    overrides: Any = None  # rules {match / module / has_role, role?, layout?}, applied in order


@dataclass
class NamesPartitionSchema:
    _target_: str = "lightning_adam_mini.app.plans.names_plan"
    _partial_: bool = True
    dim: int | None = None
    n_heads: int | None = None


@dataclass
class PinnedPartitionSchema:
    _target_: str = "lightning_adam_mini.app.plans.pinned_plan"
    _partial_: bool = True
    path: str = MISSING


# ---- data --------------------------------------------------------------------------------------
@dataclass
class TextDataSchema:
    _target_: str = "lightning_adam_mini.app.text_data.ByteTextDataModule"
    path: str | None = None
    block_size: int = 128
    batch_size: int = 32
    val_fraction: float = 0.1
    num_workers: int = 0
    test_fraction: float = 0.0


@dataclass
class ShapesDataSchema:
    _target_: str = "lightning_adam_mini.app.shapes_data.ShapesDataModule"
    num_train: int = 4096
    num_val: int = 1024
    image_size: int = 16
    noise: float = 0.3
    seed: int = 1234
    batch_size: int = 64
    num_workers: int = 0


# ---- trainer -----------------------------------------------------------------------------------
@dataclass
class TrainerSchema:
    _target_: str = "lightning.pytorch.Trainer"
    default_root_dir: str | None = None
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: Any = "auto"
    sync_batchnorm: bool = False
    precision: Any = "32-true"
    max_steps: int = -1
    max_epochs: int | None = None
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = 1
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    log_every_n_steps: int = 50
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    num_sanity_val_steps: int = 2
    enable_checkpointing: bool = False
    deterministic: Any = False


# ---- models: <Model>(cfg=<Model>Config(...)) ---------------------------------------------------------
def _model_schema(model_target: str, config_cls: type) -> type:
    """A schema ``{_target_: model_target, cfg: {_target_: <config class>, <its typed fields>}}``."""
    cfg_node = make_dataclass(
        config_cls.__name__ + "Node",
        [("_target_", str, field(default=f"{config_cls.__module__}.{config_cls.__qualname__}"))],
        bases=(config_cls,),
    )
    return make_dataclass(
        config_cls.__name__.replace("Config", "") + "Schema",
        [
            ("_target_", str, field(default=model_target)),
            ("cfg", cfg_node, field(default_factory=cfg_node)),
        ],
    )


GPTSchema = _model_schema("lightning_adam_mini.app.models.GPT", GPTConfig)
LlamaSchema = _model_schema("lightning_adam_mini.app.models.Llama", LlamaConfig)
ConvNetSchema = _model_schema("lightning_adam_mini.app.models.ConvNet", ConvNetConfig)

SCHEMAS: dict[tuple[str | None, str], type] = {
    (None, "train_schema"): TrainSchema,
    ("optimizer", "adam_mini_schema"): AdamMiniSchema,
    ("optimizer", "adamw_schema"): AdamWSchema,
    ("optimizer", "adam_mini_official_schema"): OfficialAdamMiniSchema,
    ("partition", "auto_schema"): AutoPartitionSchema,
    ("partition", "names_schema"): NamesPartitionSchema,
    ("partition", "pinned_schema"): PinnedPartitionSchema,
    ("data", "text_schema"): TextDataSchema,
    ("data", "shapes_schema"): ShapesDataSchema,
    ("trainer", "trainer_schema"): TrainerSchema,
    ("model", "gpt_schema"): GPTSchema,
    ("model", "llama_schema"): LlamaSchema,
    ("model", "convnet_schema"): ConvNetSchema,
}


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore, and the ``lam_pid`` resolver that makes run
    directories unique (idempotent)."""
    OmegaConf.register_new_resolver("lam_pid", os.getpid, replace=True)
    cs = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        cs.store(group=group, name=name, node=node)
