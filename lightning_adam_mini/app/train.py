"""``lam-train``: Hydra entry point (configs in ``lightning_adam_mini/app/configs``).

    lam-train                                        # small GPT, AdamMini, CPU or CUDA, ~3 min on 2 cores
    lam-train optimizer=adamw trainer.max_steps=1000
    lam-train -m optimizer=adam_mini,adamw seed=0,1,2   # then lam-compare <sweep dir> (runs itself)

Each run writes into its Hydra output directory: the Lightning logs (``csv/metrics.csv``),
``metrics.json`` (final val loss, tokens/s, memory, optimizer state bytes, loss curves),
``partition_plan.yaml`` (AdamMini; pin it with ``partition=pinned partition.path=...``) and
``loss_curve.png``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..lightning import AdamMiniCallback
from ..stats import MiB
from .plot import plot_loss_curves
from .run_summary import RunSummary
from .schema import register_configs
from .task import CrossEntropyTask

log = logging.getLogger(__name__)

register_configs()


def _instantiate_all(nodes: DictConfig | None) -> list[Any]:
    return [instantiate(node) for node in (nodes or {}).values() if node is not None]


def _run_label(choices: dict[str, Any]) -> str:
    """``adamw``, ``adam_mini_names``, or ``adam_mini (<partition> plan)``."""
    optimizer = str(choices.get("optimizer"))
    return f"{optimizer} ({choices.get('partition')} plan)" if optimizer == "adam_mini" else optimizer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Build everything from ``cfg``, fit, validate, and return the run's summary."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
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
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=_instantiate_all(cfg.get("logger")) or False
    )

    trainer.fit(task, datamodule=datamodule)
    trainer.validate(task, datamodule=datamodule, verbose=False)

    choices = dict(hydra_cfg.runtime.choices)
    summary = summary_cb.summary(trainer, task.net)
    summary.update(
        label=_run_label(choices),
        seed=cfg.seed,
        lr=cfg.optimizer.lr,
        choices={k: v for k, v in choices.items() if not k.startswith("hydra")},
        overrides=list(hydra_cfg.overrides.task),
        run_dir=str(run_dir),
    )
    if trainer.is_global_zero:
        _write_outputs(cfg, trainer, task, summary, run_dir)
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
    log.info(
        "\n".join(
            [
                f"run: {summary['label']}  seed={cfg.seed}  lr={cfg.optimizer.lr:g}  device={summary['device']}",
                f"final val loss:   {summary['final_val_loss']:.4f}  (after {summary['steps']} steps)",
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
