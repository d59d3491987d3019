"""``AdamMiniCallback``: the plan at fit start, per-step Adam-mini metrics, the plan in checkpoints."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from partitioners import PartitionPlan, PlanMismatchError, load_plan

from ..optimizer import AdamMini
from ..stats import step_size_stats
from .plan_sync import example_input_of, first_input_of, plan_for_module
from .table import show_plan

CHECKPOINT_KEY = "adam_mini_partition_plan"


class AdamMiniCallback(Callback):
    """Makes :class:`AdamMini` work in a Trainer without hand wiring.

    * ``setup``: traces the partition of the (still unsharded) LightningModule once, on rank 0,
      with ``example_input`` / ``example_input_array``, and broadcasts it. Without an example
      input the first training batch is traced instead (``input_from_batch`` picks the model input
      out of it; default: the batch itself if a tensor, else its first element).
    * ``on_fit_start``: binds every AdamMini built from bare tensors (LightningCLI,
      ``OptimizerCallable``, Hydra ``_partial_``) to the module and the plan, and shows the plan.
    * every ``log_every_n_steps`` optimizer steps (default: the Trainer's), logs through the
      Trainer's loggers ``adam_mini/step_size/{role}/{min,median,max}`` (``lr / (sqrt(v_hat) + eps)``
      over the role's blocks) and ``adam_mini/params/{role}`` (share of the parameters).
    * checkpoints carry the plan; resuming from one made with another plan is refused.
    """

    def __init__(
        self,
        example_input: Any = None,
        partition: PartitionPlan | str | os.PathLike | None = None,
        input_from_batch: Callable[[Any], Any] | None = None,
        log_every_n_steps: int | None = None,
        show: bool = True,
        rich: bool = True,
    ) -> None:
        if log_every_n_steps is not None and log_every_n_steps < 1:
            raise ValueError(f"AdamMiniCallback: log_every_n_steps must be >= 1, got {log_every_n_steps}")
        self.example_input = example_input
        self.partition = partition
        self.input_from_batch = input_from_batch or first_input_of
        self.log_every_n_steps = log_every_n_steps
        self.show = show
        self.rich = rich
        self.plan: PartitionPlan | None = None
        self._saved_plan: PartitionPlan | None = None  # from a checkpoint, until the plan is known
        self._shown = False
        self._last_logged_step = -1

    # ---- plan ---------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.plan is not None:
            return
        if self.partition is not None:
            self.plan = load_plan(self.partition)
            return
        example = self.example_input if self.example_input is not None else example_input_of(pl_module)
        if example is not None:
            self.plan = plan_for_module(pl_module, example, trainer.strategy)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        adam_minis = self._optimizers(trainer)
        if not adam_minis:
            raise RuntimeError(
                "AdamMiniCallback found no AdamMini among the Trainer's optimizers: return "
                "`adam_mini_optimizers(self, ...)` from configure_optimizers, or remove the callback"
            )
        plan = self.plan or self._saved_plan
        if plan is None:
            return  # traced on the first batch
        self._bind(trainer, pl_module, plan)
        if self.plan is not None:
            self._check_plan(trainer, self._saved_plan)
            self._show()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.plan is not None:
            return
        self.plan = plan_for_module(pl_module, self.input_from_batch(batch), trainer.strategy)
        self._bind(trainer, pl_module, self.plan)
        self._check_plan(trainer, self._saved_plan)
        self._show()

    def _bind(self, trainer: pl.Trainer, pl_module: pl.LightningModule, plan: PartitionPlan) -> None:
        """Bind unbound optimizers to ``plan``; an optimizer built with its own plan keeps it, and
        the callback reports and checkpoints that one (unless it was given another explicitly)."""
        for opt in self._optimizers(trainer):
            opt.bind(pl_module, partition=plan)
            if self.plan is not None and opt.plan != self.plan:
                if self.partition is not None:
                    raise PlanMismatchError(
                        "AdamMiniCallback(partition=...) differs from the plan the AdamMini optimizer "
                        "was built with: give the partition to one of them only"
                    )
                self.plan = opt.plan

    # ---- metrics ------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        every = self.log_every_n_steps or trainer.log_every_n_steps
        if (
            not trainer.loggers
            or step == self._last_logged_step
            or step % every
            or not trainer.is_global_zero
        ):
            return
        self._last_logged_step = step
        metrics: dict[str, float] = {}
        adam_minis = self._optimizers(trainer)
        for i, opt in enumerate(adam_minis):
            prefix = "adam_mini" if len(adam_minis) == 1 else f"adam_mini_{i}"
            metrics.update(step_size_stats(opt, prefix=prefix))
        if metrics:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    # ---- checkpoints --------------------------------------------------------------------
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.plan is not None:
            checkpoint[CHECKPOINT_KEY] = self.plan.to_dict()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            return
        self._saved_plan = PartitionPlan.from_dict(saved)
        if self.plan is not None:
            self._check_plan(trainer, self._saved_plan)

    def _check_plan(self, trainer: pl.Trainer, saved: PartitionPlan | None) -> None:
        if saved is None or self.plan is None or saved == self.plan:
            return
        where = f" {trainer.ckpt_path}" if trainer.ckpt_path else ""
        changed = [n for n in self.plan if n not in saved or saved[n] != self.plan[n]]
        extra = [n for n in saved if n not in self.plan]
        detail = "; ".join(
            [f"{n}: checkpoint {saved.get(n, 'absent')}, model {self.plan[n]}" for n in changed[:3]]
            + [f"{n}: only in the checkpoint" for n in extra[:3]]
        )
        raise PlanMismatchError(
            f"AdamMiniCallback: the checkpoint{where} was trained with another Adam-mini partition "
            f"({detail}). Its optimizer state does not fit this model. Resume with the same model "
            "and partition (pin it: AdamMiniCallback(partition=<the plan YAML>)), or start a new "
            "run from the weights only (load the state_dict into the module, fit without ckpt_path)"
        )

    # ---- helpers ------------------------------------------------------------------------
    @staticmethod
    def _optimizers(trainer: pl.Trainer) -> list[AdamMini]:
        return [opt for opt in trainer.strategy.optimizers if isinstance(opt, AdamMini)]

    def _show(self) -> None:
        if self.show and not self._shown and self.plan is not None:
            self._shown = True
            show_plan(self.plan, use_rich=self.rich)
