"""Helpers for the app tests: compose configs in-process, run lam-train in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from lightning_adam_mini.app.schema import register_configs

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "lightning_adam_mini" / "app" / "configs"
# What the console script `lam-train` runs: main() imported from its module (so Hydra finds the
# configs the way it does after `pip install .`, as package resources, not next to a script).
LAM_TRAIN = [sys.executable, "-c", "from lightning_adam_mini.app.train import main; main()"]


def group_options(group: str) -> list[str]:
    """The YAML options of a config group (schemas in the ConfigStore are not options)."""
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def compose_train(overrides: list[str] = ()) -> DictConfig:
    """The composed ``train`` config (without the ``hydra`` node), as lam-train would see it."""
    register_configs()
    with initialize_config_module("lightning_adam_mini.app.configs", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def run_lam_train(
    args: list[str], cwd: Path, timeout: int = 300, command: list[str] = LAM_TRAIN
) -> subprocess.CompletedProcess:
    return subprocess.run(
        command + args, cwd=cwd, env=lam_train_env(), capture_output=True, text=True, timeout=timeout
    )


def lam_train_env() -> dict[str, str]:
    """lam-train's environment in tests: this checkout's code on PYTHONPATH, not an installed copy
    (the run's cwd is a tmp dir)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONHASHSEED="0", HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1", PYTHONPATH=path)


@pytest.fixture
def tiny() -> list[str]:
    """Overrides for a seconds-long run of the default app."""
    return ["experiment=smoke", "trainer.accelerator=cpu"]
