"""The bad-input matrix: each row is an input, the exception it must raise, and a substring that
names the culprit (the setting, parameter or file to fix). A new check is one row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from lightning_adam_mini import AdamMini
from lightning_adam_mini.app.train import check_settings
from partitioners import PlanMismatchError, load_plan
from partitioners.cli import main as lam_partition

from ..app.conftest import compose_train
from ..optim.conftest import tiny_llama, tiny_plan


class Case(NamedTuple):
    action: Callable[[Path], Any]  # gets a fresh tmp dir for its files
    error: type[BaseException]
    names: str  # must appear in the error message (or in stderr for a CLI's usage error)


def _adam_mini(**kwargs: Any) -> AdamMini:
    model = tiny_llama()
    return AdamMini(model, partition=tiny_plan(model), **kwargs)


def _frozen_model(_: Path) -> AdamMini:
    model = tiny_llama().requires_grad_(False)
    return AdamMini(model, partition=tiny_plan(model))


def _add_group(group: dict[str, Any]) -> Callable[[Path], None]:
    def run(_: Path) -> None:
        model = tiny_llama()
        named = list(model.named_parameters())
        AdamMini(named[:2], partition=tiny_plan(model)).add_param_group({"params": named[2:], **group})

    return run


def _plan_file(text: str) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        (tmp / "plan.yaml").write_text(text)
        return load_plan(tmp / "plan.yaml")

    return run


def _data(overrides: list[str], content: bytes | None = None) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        if content is not None:
            (tmp / "corpus.txt").write_bytes(content)
            overrides.append(f"data.path={tmp / 'corpus.txt'}")
        return instantiate(compose_train(overrides).data)

    return run


def _settings(overrides: list[str]) -> Callable[[Path], None]:
    return lambda _: check_settings(compose_train(overrides))


def _lam_partition(*args: str) -> Callable[[Path], int]:
    return lambda tmp: lam_partition([a.replace("TMP", str(tmp)) for a in args])


ENTRY = "{shape: [4, 2], role: linear, layout: {kind: rows, axis: 0}}"

CASES: dict[str, Case] = {
    # ---- optimizer hyperparameters and groups
    "lr=True": Case(lambda _: _adam_mini(lr=True), ValueError, "lr"),
    "lr as a 2-element tensor": Case(lambda _: _adam_mini(lr=torch.tensor([1e-3, 1e-3])), ValueError, "lr"),
    "lr as a string": Case(lambda _: _adam_mini(lr="1e-3"), ValueError, "lr"),
    "betas[0]=True": Case(lambda _: _adam_mini(betas=(True, 0.9)), ValueError, "betas[0]"),
    "eps as numpy bool": Case(lambda _: _adam_mini(eps=np.bool_(True)), ValueError, "eps"),
    "weight_decay=nan": Case(lambda _: _adam_mini(weight_decay=float("nan")), ValueError, "weight_decay"),
    "decay_filter not callable": Case(lambda _: _adam_mini(decay_filter=True), TypeError, "decay_filter"),
    "no trainable parameters": Case(_frozen_model, ValueError, "requires_grad=False"),
    "added group with lr=-1": Case(_add_group({"lr": -1.0}), ValueError, "lr"),
    "added group of unknown params": Case(
        _add_group({"params": [("ghost", nn.Parameter(torch.zeros(2)))]}), PlanMismatchError, "'ghost'"
    ),
    # ---- partition plan files
    "plan file missing": Case(lambda tmp: load_plan(tmp / "nope.yaml"), FileNotFoundError, "nope.yaml"),
    "plan YAML empty": Case(_plan_file(""), ValueError, "plan.yaml"),
    "plan YAML without params": Case(_plan_file("w: 1\n"), ValueError, "plan.yaml"),
    "plan entry without layout": Case(
        _plan_file("params:\n  w: {shape: [4, 2], role: linear}\n"), ValueError, "plan.yaml: parameter 'w'"
    ),
    "plan layout with a float axis": Case(
        _plan_file("params:\n  w: {shape: [4, 2], role: x, layout: {kind: rows, axis: 0.5}}\n"),
        ValueError,
        "parameter 'w': layout axis",
    ),
    "plan shape with a float": Case(
        _plan_file("params:\n  w: {shape: [4.0, 2], role: x, layout: {kind: tensor}}\n"),
        ValueError,
        "parameter 'w': shape",
    ),
    "plan with a duplicate parameter": Case(
        _plan_file(f"params:\n  w: {ENTRY}\n  w: {ENTRY}\n"), ValueError, "duplicate key 'w'"
    ),
    "plan layout out of range": Case(
        _plan_file("params:\n  w: {shape: [4], role: x, layout: {kind: rows, axis: 1}}\n"),
        PlanMismatchError,
        "plan.yaml: plan entry 'w'",
    ),
    # ---- lam-partition arguments (usage errors, no traceback)
    "lam-partition missing file": Case(_lam_partition("TMP/config.json"), SystemExit, "no such file"),
    "lam-partition unknown module": Case(_lam_partition("no_such_module:f"), SystemExit, "'no_such_module'"),
    "lam-partition unknown factory": Case(
        _lam_partition("tests.models.nanogpt:nothing"), SystemExit, "no callable 'nothing'"
    ),
    "lam-partition missing rules": Case(
        _lam_partition("tests.models.nanogpt:gpt", "--rules", "TMP/r.yaml"), SystemExit, "--rules"
    ),
    # ---- lam-train settings, refused before anything is built or trained
    "data.block_size=0": Case(_data(["data.block_size=0"]), InstantiationException, "data.block_size"),
    "data.batch_size=0": Case(_data(["data.batch_size=0"]), InstantiationException, "data.batch_size"),
    "data.path missing": Case(_data(["data.path=/no/such/file"]), InstantiationException, "data.path"),
    "data.path empty": Case(_data([], b""), InstantiationException, "data.path"),
    "data.path shorter than a window": Case(
        _data(["data.block_size=64"], b"x" * 64), InstantiationException, "data.path"
    ),
    "data.path binary": Case(_data([], b"\x00\xff" * 4096), InstantiationException, "not UTF-8"),
    "partition=pinned without a path": Case(_settings(["partition=pinned"]), ValueError, "partition.path"),
    "unknown +key": Case(_settings(["+ckpt_pth=x.ckpt"]), ValueError, "ckpt_pth"),
    "unknown +key of a partial": Case(
        _settings(["+optimizer.momentum=0.9"]), ValueError, "optimizer.momentum"
    ),
    "unknown +key of the scheduler": Case(_settings(["+scheduler.warmup=3"]), ValueError, "scheduler.warmup"),
    "ckpt_path missing": Case(_settings(["ckpt_path=/no/such.ckpt"]), FileNotFoundError, "ckpt_path"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_refused_naming_the_culprit(case: Case, tmp_path, capsys):
    with pytest.raises(case.error) as err:
        case.action(tmp_path)
    text = f"{err.value} {capsys.readouterr().err}"
    assert case.names in text, text
    assert "Traceback" not in text


def test_real_numbers_of_any_kind_are_accepted():
    opt = _adam_mini(lr=np.float32(1e-3), betas=(np.float64(0.9), 0.99), eps=np.float16(1e-4), weight_decay=1)
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(1e-3)
    assert opt.param_groups[0]["betas"] == (0.9, 0.99) and opt.param_groups[0]["weight_decay"] == 1.0
