"""``lam-train``: Hydra entry point (configs in ``lightning_adam_mini/app/configs``).

    lam-train                                        # small GPT, AdamMini, CPU or CUDA, ~3 min on 2 cores
    lam-train optimizer=adamw trainer.max_steps=1000
    lam-train -m optimizer=adam_mini,adamw seed=0,1,2   # then lam-compare <sweep dir> (runs itself)

Each run writes into its Hydra output directory (unique per run; a run refuses a directory that
another live run holds): the Lightning logs (``csv/metrics.csv``), ``metrics.json`` (final val
loss, tokens/s, memory, optimizer state bytes, loss curves), ``partition_plan.yaml`` (AdamMini;
pin it with ``partition=pinned partition.path=...``) and ``loss_curve.png``.

SIGTERM (a scheduler's pre-emption, ``kill``) stops a run at the next batch boundary: it saves
``checkpoints/interrupted.ckpt`` (Lightning's checkpoint: weights, optimizer, scheduler, loops,
data position), writes ``metrics.json`` marked ``"interrupted": true`` and exits with status 143.
``lam-train <same overrides> ckpt_path=<that file>`` continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import math
import signal
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object, instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, MissingMandatoryValue, OmegaConf

from ..lightning import AdamMiniCallback
from ..stats import MiB
from .plot import plot_loss_curves
from .run_dir import RunDirLock
from .run_summary import RunSummary
from .schema import TrainSchema, register_configs
from .task import CrossEntropyTask

log = logging.getLogger(__name__)

register_configs()


def _instantiate_all(nodes: DictConfig | None) -> list[Any]:
    return [instantiate(node) for node in (nodes or {}).values() if node is not None]


def _run_label(choices: dict[str, Any]) -> str:
    """``adamw``, ``adam_mini_names``, or ``adam_mini (<partition> plan)``."""
    optimizer = str(choices.get("optimizer"))
    return f"{optimizer} ({choices.get('partition')} plan)" if optimizer == "adam_mini" else optimizer


class CheckpointOnSigterm(Callback):
    """Saves a Lightning checkpoint when the Trainer stops on SIGTERM (Lightning's signal handling
    raises ``SIGTERMException`` at the next batch boundary). Unlike ``OnExceptionCheckpoint`` it
    ignores crashes (their state is not worth resuming) and needs no ``enable_checkpointing``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)


def check_settings(cfg: DictConfig) -> None:
    """Refuse, before anything is built, a setting lam-train would ignore or lacks."""
    known = {f.name for f in dataclasses.fields(TrainSchema)} | {"hydra"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(
            f"unknown setting(s) {unknown}: lam-train reads none of them (a typo in a +key=value "
            f"override?); its top-level settings are {sorted(known - {'hydra'})}"
        )
    try:  # resolve=False: nothing is evaluated yet, only ??? values are looked for
        settings = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
        OmegaConf.to_container(settings, resolve=False, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise ValueError(
            f"setting {err.full_key} must be given (e.g. partition=pinned needs "
            "partition.path=<plan.yaml>, the partition_plan.yaml of an earlier run)"
        ) from None
    for group in ("model", "data", "optimizer", "partition", "scheduler", "trainer"):
        node = cfg.get(group)
        if node is None or "_target_" not in node:
            continue
        # Partials (optimizer, partition, scheduler) are called only mid-fit: check their keys now.
        takes = inspect.signature(get_object(node._target_)).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values()):
            continue
        unknown = [k for k in node if not str(k).startswith("_") and k not in takes]
        if unknown:
            raise ValueError(
                f"{group}.{unknown[0]}: {node._target_} takes no argument {unknown[0]!r} (a typo in "
                "a +key=value override?)"
            )
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).expanduser().is_file():
        raise FileNotFoundError(
            f"ckpt_path={cfg.ckpt_path!r}: no such checkpoint (a run stopped by SIGTERM leaves "
            "<run dir>/checkpoints/interrupted.ckpt)"
        )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Build everything from ``cfg``, fit, validate, and return the run's summary; holds the run
    directory (:class:`RunDirLock`) meanwhile. On SIGTERM: checkpoint, partial summary, exit 143."""
    check_settings(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    # Rank 0 holds the lock; the other ranks of a DDP run share its directory.
    with RunDirLock(run_dir) if getattr(rank_zero_only, "rank", 0) == 0 else contextlib.nullcontext():
        return _train(cfg, run_dir)


def _train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    hydra_cfg = HydraConfig.get()
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    task = CrossEntropyTask(
        net=instantiate(cfg.model),
        optimizer=instantiate(cfg.optimizer),
        example_input=datamodule.example_input(),
        partition=instantiate(cfg.partition) if cfg.get("partition") else None,
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )
    callbacks = _instantiate_all(cfg.get("callbacks"))
    if task.uses_plan:  # shows the optimizer's plan table, logs per-role step sizes
        callbacks.append(AdamMiniCallback())
    summary_cb = next((c for c in callbacks if isinstance(c, RunSummary)), None)
    if summary_cb is None:
        summary_cb = RunSummary()
        callbacks.append(summary_cb)
    on_sigterm = CheckpointOnSigterm(run_dir / "checkpoints" / "interrupted.ckpt")
    callbacks.append(on_sigterm)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=_instantiate_all(cfg.get("logger")) or False
    )

    interrupted = False
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    except SIGTERMException:  # Lightning stopped at a batch boundary and checkpointed (on_sigterm)
        interrupted = True
    else:
        trainer.validate(task, datamodule=datamodule, verbose=False)
        if getattr(datamodule, "has_test_split", False):
            trainer.test(task, datamodule=datamodule, verbose=False)

    choices = dict(hydra_cfg.runtime.choices)
    summary = summary_cb.summary(trainer, task.net)
    summary.update(
        label=_run_label(choices),
        seed=cfg.seed,
        lr=cfg.optimizer.lr,
        choices={k: v for k, v in choices.items() if not k.startswith("hydra")},
        overrides=list(hydra_cfg.overrides.task),
        run_dir=str(run_dir),
        interrupted=interrupted,
        resumed_from=cfg.ckpt_path,
    )
    if trainer.is_global_zero:
        _write_outputs(cfg, trainer, task, summary, run_dir)
    if interrupted:
        if trainer.is_global_zero:
            overrides = [o for o in summary["overrides"] if not o.startswith("ckpt_path=")]
            log.warning(
                "interrupted by SIGTERM after %d steps; checkpoint %s; resume with:\n  lam-train %s",
                summary["steps"],
                on_sigterm.path,
                " ".join([*overrides, f"ckpt_path={on_sigterm.path}"]),
            )
        raise SystemExit(128 + signal.SIGTERM)
    return summary


def _write_outputs(
    cfg: DictConfig, trainer: L.Trainer, task: CrossEntropyTask, summary: dict[str, Any], run_dir: Path
) -> None:
    if task.uses_plan:  # the model's plan (names of model.named_parameters()), to pin or inspect
        (run_dir / "partition_plan.yaml").write_text(task.net_plan().to_yaml())
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=1))
    if cfg.plot:
        png = plot_loss_curves(
            [summary], run_dir / "loss_curve.png", title=f"{summary['label']}, seed {cfg.seed}"
        )
        summary["plot"] = str(png)
    if summary["interrupted"]:
        return
    log.info(
        "\n".join(
            [
                f"run: {summary['label']}  seed={cfg.seed}  lr={cfg.optimizer.lr:g}  device={summary['device']}",
                f"final val loss:   {summary['final_val_loss']:.4f}  (after {summary['steps']} steps)"
                + (
                    f"; test loss {summary['final_test_loss']:.4f}"
                    if math.isfinite(summary["final_test_loss"])
                    else ""
                ),
                f"throughput:       {summary['tokens_per_s']:,.0f} tokens/s (training steps only)",
                f"{summary['peak_memory_kind']}: {summary['peak_memory_bytes'] / MiB:,.1f} MiB",
                f"optimizer state:  {summary['optimizer_state_bytes'] / MiB:.3f} MiB; AdamW would keep "
                f"{summary['adamw_state_bytes'] / MiB:.3f} MiB ({summary['state_vs_adamw']:.1%})",
                f"outputs:          {run_dir}" + ("  (loss_curve.png)" if cfg.plot else ""),
            ]
        )
    )


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final val loss (the objective for Hydra sweepers)."""
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    return float(train(cfg)["final_val_loss"])


if __name__ == "__main__":
    main()
