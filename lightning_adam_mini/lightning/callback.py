"""``AdamMiniCallback``: the plan at fit start, shown once, and per-step Adam-mini metrics."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from partitioners import PartitionPlan, PlanMismatchError

from ..binding import resolve_plan
from ..optimizer import AdamMini
from ..stats import step_size_stats
from .conventions import as_call_args, check_strategy, example_input_of, first_input_of
from .table import show_plan


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

    Checkpoints carry the plan in the optimizer state (one copy); resuming with another plan is
    refused by :meth:`AdamMini.load_state_dict`.
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
        #: the plan in use: traced or given, then the optimizer's once bound
        self.plan: PartitionPlan | None = None
        self._shown = False
        self._last_logged_step = -1

    # ---- plan ---------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.plan is not None:
            return
        check_strategy(trainer.strategy)
        example = self.example_input if self.example_input is not None else example_input_of(pl_module)
        if self.partition is not None or example is not None:
            self.plan = resolve_plan(
                pl_module, self.partition, *as_call_args(example), strategy=trainer.strategy
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        adam_minis = self._optimizers(trainer)
        if not adam_minis:
            raise RuntimeError(
                "AdamMiniCallback found no AdamMini among the Trainer's optimizers: return "
                "`adam_mini_optimizers(self, ...)` from configure_optimizers, or remove the callback"
            )
        if self.plan is None and all(opt.is_bound for opt in adam_minis):
            self.plan = adam_minis[0].plan  # built with their plan: nothing to trace
        if self.plan is not None:  # else traced on the first batch
            self._bind(trainer, pl_module, self.plan)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.plan is not None:
            return
        example = self.input_from_batch(batch)
        plan = resolve_plan(pl_module, None, *as_call_args(example), strategy=trainer.strategy)
        self._bind(trainer, pl_module, plan)

    def _bind(self, trainer: pl.Trainer, pl_module: pl.LightningModule, plan: PartitionPlan) -> None:
        """Bind unbound optimizers to ``plan``; an optimizer built with its own plan keeps it, and
        the callback reports that one (unless it was given another explicitly)."""
        for opt in self._optimizers(trainer):
            opt.bind(pl_module, partition=plan)
            if opt.plan is not None and opt.plan != plan:
                if self.partition is not None:
                    raise PlanMismatchError(
                        "AdamMiniCallback(partition=...) differs from the plan the AdamMini optimizer "
                        "was built with: give the partition to one of them only"
                    )
                plan = opt.plan
        self.plan = plan
        if self.show and not self._shown:
            self._shown = True
            show_plan(plan, use_rich=self.rich)

    # ---- metrics ------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        every = self.log_every_n_steps or trainer.log_every_n_steps  # pyright: ignore[reportAttributeAccessIssue]
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
            if opt.nonfinite == "skip":  # one host sync, at logging time only
                metrics[f"{prefix}/skipped_nonfinite"] = float(opt.nonfinite_skipped)
        if metrics:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    @staticmethod
    def _optimizers(trainer: pl.Trainer) -> list[AdamMini]:
        return [opt for opt in trainer.strategy.optimizers if isinstance(opt, AdamMini)]
