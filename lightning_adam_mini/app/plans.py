"""Partition factories for the ``partition`` config group, and the optimizer built from them.

Every factory is called as ``factory(model, example_inputs) -> PartitionPlan`` so the config group
can swap them freely; only :class:`~lightning_adam_mini.AdamMini` uses a plan.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.optim import Optimizer

from partitioners import PartitionPlan, auto_partition, load_plan, name_partition

from ..optimizer import AdamMini, decay_matrices

PlanFactory = Callable[[nn.Module, tuple[Any, ...]], PartitionPlan]


def auto_plan(
    model: nn.Module, example_inputs: tuple[Any, ...], overrides: list[dict[str, Any]] | None = None
) -> PartitionPlan:
    """The graph partition: ``auto_partition(model, example_inputs, overrides=overrides)``;
    ``overrides`` are rules (:mod:`partitioners.overrides`) applied on top, e.g.
    ``[{has_role: [query, key, value, qkv, attn_out], layout: element}]`` for Adam's per-element
    ``v`` on the attention weights."""
    return auto_partition(model, example_inputs, overrides=overrides)


def model_config_value(model: nn.Module, *names: str) -> Any:
    """The first of ``names`` that the model's ``cfg`` (on it or a submodule) sets, else None."""
    cfg = next((m.cfg for m in model.modules() if hasattr(m, "cfg")), None)
    return next((getattr(cfg, n) for n in names if getattr(cfg, n, None)), None)


def _model_width_heads(model: nn.Module) -> tuple[int, int]:
    dim = model_config_value(model, "n_embd", "dim")
    heads = model_config_value(model, "n_head", "n_heads")
    return (dim, heads) if dim and heads else (2048, 32)  # the official package's defaults


def names_plan(
    model: nn.Module, example_inputs: tuple[Any, ...], dim: int | None = None, n_heads: int | None = None
) -> PartitionPlan:
    """The official Adam-mini v1.1.1 name rules; ``dim``/``n_heads`` default to the model's config."""
    model_dim, model_heads = _model_width_heads(model)
    return name_partition(model, dim=dim or model_dim, n_heads=n_heads or model_heads)


def pinned_plan(model: nn.Module, example_inputs: tuple[Any, ...], path: str) -> PartitionPlan:
    """A plan saved as YAML (``PartitionPlan.to_yaml``), e.g. a run's ``partition_plan.yaml``."""
    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(
            f"partition.path={path!r}: no such file; point it at a plan YAML, e.g. the "
            "partition_plan.yaml that every lam-train run writes into its output directory"
        )
    return load_plan(path)


def _target(optimizer_factory: Callable[..., Optimizer]) -> Callable[..., Optimizer]:
    return optimizer_factory.func if isinstance(optimizer_factory, functools.partial) else optimizer_factory


def uses_plan(optimizer_factory: Callable[..., Optimizer]) -> bool:
    """Whether the (partial) optimizer class is AdamMini, i.e. takes a partition plan."""
    target = _target(optimizer_factory)
    return isinstance(target, type) and issubclass(target, AdamMini)


def builds_from_model(optimizer_factory: Callable[..., Optimizer]) -> bool:
    """Whether the (partial) factory takes the model itself as its first argument ``model``
    (e.g. :func:`~lightning_adam_mini.app.official.official_adam_mini`), not parameter groups."""
    target = _target(optimizer_factory)
    if isinstance(target, type):
        return False
    first = next(iter(inspect.signature(target).parameters), None)
    return first == "model"


def baseline_optimizer(optimizer_factory: Callable[..., Optimizer], model: nn.Module) -> Optimizer:
    """A baseline (e.g. AdamW) whose weight decay applies to the parameters AdamMini's default
    ``decay_filter`` picks, so that the comparison is like for like; a factory that
    :func:`builds_from_model` gets the model and applies its own rules."""
    if builds_from_model(optimizer_factory):
        return optimizer_factory(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decayed = [decay_matrices(n, p) for n, p in named]
    return optimizer_factory(
        [
            {"params": [p for (_, p), d in zip(named, decayed) if d]},
            {"params": [p for (_, p), d in zip(named, decayed) if not d], "weight_decay": 0.0},
        ]
    )


def build_optimizer(
    optimizer_factory: Callable[..., Optimizer],
    model: nn.Module,
    example_input: Tensor,
    plan_factory: PlanFactory | None = None,
) -> Optimizer:
    """Outside Lightning: AdamMini over ``model`` with the factory's plan, or the baseline."""
    if uses_plan(optimizer_factory):
        return optimizer_factory(model, partition=(plan_factory or auto_plan)(model, (example_input,)))
    return baseline_optimizer(optimizer_factory, model)
