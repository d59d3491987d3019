"""Optimizer in backward: each parameter is updated the moment its gradient is complete.

``AdamMini(..., step_in_backward=True)`` registers a ``register_post_accumulate_grad_hook`` on
every parameter. The hook runs the same update as ``step()`` for that one parameter (Adam-mini's
blocks never span two parameters, so this is exact) and frees the gradient at once, so that the
gradients of the whole model never exist together: peak training memory drops by about the
parameters' own size.

What it cannot do, and refuses:

* gradient accumulation: the update happens inside the first backward; a second backward
  before ``step()`` raises;
* clipping by the *global* gradient norm: when one parameter is updated the others' gradients
  do not exist yet (Lightning's ``gradient_clip_val`` is refused by :func:`check_trainer`);
  clip per parameter instead;
* ``compile=True`` (each hook updates one tensor eagerly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .optimizer import AdamMini


class InBackwardSteps:
    """The hooks of one :class:`~lightning_adam_mini.AdamMini` built with ``step_in_backward``."""

    def __init__(self, optimizer: AdamMini) -> None:
        self.optimizer = optimizer
        self.updated: set[int] = set()  # ids of the parameters updated since the last step()
        self.where: dict[int, tuple[dict[str, Any], str]] = {}  # id(param) -> (group, name)
        self.handles = [
            p.register_post_accumulate_grad_hook(self._update)
            for group in optimizer.param_groups
            for p in group["params"]
        ]

    def hook_group(self, group: dict[str, Any]) -> None:
        """Hook the parameters of a group added after construction."""
        self.handles += [p.register_post_accumulate_grad_hook(self._update) for p in group["params"]]

    def end_iteration(self) -> None:
        """``step()`` was called: the next backward starts a new iteration."""
        self.updated.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    @torch.no_grad()
    def _update(self, p: Tensor) -> None:
        opt = self.optimizer
        opt._require_bound("step")
        if id(p) in self.updated:
            raise RuntimeError(
                "AdamMini(step_in_backward=True): a second backward reached a parameter before "
                "optimizer.step() was called. Gradient accumulation is impossible when each "
                "parameter is updated inside backward: call step() after every backward, or "
                "build AdamMini without step_in_backward"
            )
        self.updated.add(id(p))
        group, name = self._locate(p)
        lists: tuple[list[Any], ...] = ([], [], [], [], [], [])
        opt._init_group({"param_names": [name], "params": [p]}, *lists)
        opt._apply(group, *lists, tensor_lr=False)
        p.grad = None

    def _locate(self, p: Tensor) -> tuple[dict[str, Any], str]:
        if id(p) not in self.where:  # first use, or groups changed since: rebuild the index
            self.where = {
                id(q): (group, name)
                for group in self.optimizer.param_groups
                for name, q in zip(group["param_names"], group["params"])
            }
        return self.where[id(p)]


def check_trainer(trainer: Any) -> None:
    """Refuse Lightning settings that step_in_backward cannot honour (names the setting)."""
    if getattr(trainer, "gradient_clip_val", None):
        raise ValueError(
            f"AdamMini(step_in_backward=True) cannot clip by the global gradient norm "
            f"(Trainer(gradient_clip_val={trainer.gradient_clip_val})): each parameter is updated "
            "before the other gradients exist. Remove gradient_clip_val, or drop step_in_backward"
        )
    if getattr(trainer, "accumulate_grad_batches", 1) != 1:
        raise ValueError(
            f"AdamMini(step_in_backward=True) cannot accumulate gradients "
            f"(Trainer(accumulate_grad_batches={trainer.accumulate_grad_batches})): each parameter "
            "is updated inside its backward. Set accumulate_grad_batches=1, or drop step_in_backward"
        )
