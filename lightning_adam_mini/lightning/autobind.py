"""Binds an AdamMini built from bare tensors when nobody else does (LightningCLI's
``--optimizer lightning_adam_mini.AdamMini``).

Registered through Lightning's own extension point, the ``lightning.pytorch.callbacks_factory``
entry point group, so every Trainer gets one :class:`AdamMiniAutoBind`. It is inert unless the
Trainer holds an *unbound* AdamMini and no :class:`~.callback.AdamMiniCallback` (which binds, shows
the plan, logs and checkpoints it; add that one for the full experience).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from .callback import AdamMiniCallback
from .plan_sync import example_input_of, first_input_of, plan_for_module


class AdamMiniAutoBind(Callback):
    """Names the parameters and traces the plan of unbound AdamMini optimizers: at fit start from
    the module's ``example_input_array``, else from the first training batch."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._bind(trainer, pl_module, example_input_of(pl_module))

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._bind(trainer, pl_module, first_input_of(batch))

    @staticmethod
    def _bind(trainer: pl.Trainer, pl_module: pl.LightningModule, example: Any) -> None:
        if example is None or any(isinstance(cb, AdamMiniCallback) for cb in trainer.callbacks):
            return
        unbound = [opt for opt in AdamMiniCallback._optimizers(trainer) if not opt.is_bound]
        if unbound:
            plan = plan_for_module(pl_module, example, trainer.strategy)
            for opt in unbound:
                opt.bind(pl_module, partition=plan)


def callbacks() -> list[Callback]:
    """The entry point's factory: one inert-unless-needed binder per Trainer."""
    return [AdamMiniAutoBind()]
