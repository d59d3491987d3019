"""lam-train runs that are stopped or collide (issue 10, defects 6 and 8), as real subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from ..app.conftest import LAM_TRAIN, lam_train_env, run_lam_train

TINY = ["experiment=smoke", "trainer.accelerator=cpu"]
MARKER = "+callbacks.marker._target_=tests.reliability.step_marker.StepMarker"


def _start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        LAM_TRAIN + args, cwd=cwd, env=lam_train_env(), stdout=log.open("w"), stderr=subprocess.STDOUT
    )


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {text!r} in the run's output:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


@pytest.mark.timeout(400)
def test_sigterm_mid_run_then_resume_is_bit_identical(tmp_path):
    steps = ["trainer.max_steps=8", "trainer.val_check_interval=4"]
    # Each step pauses 3 s after printing STEP n, so the signal sent on seeing STEP 2 lands in that
    # pause (or, on a very busy machine, in step 3): mid-epoch, away from the validations at steps
    # 4 and 8 (a SIGTERM during a validation stops it part way, and that one validation's loss is
    # not recorded; the weights resume exactly all the same).
    marker = [MARKER, "+callbacks.marker.pause=3", "+callbacks.marker.save_as=params.pt"]
    log = tmp_path / "stopped.log"
    victim = _start([*TINY, *steps, *marker, f"hydra.run.dir={tmp_path}/stopped"], tmp_path, log)
    _wait_for(log, "STEP 2", victim)
    victim.send_signal(signal.SIGTERM)
    assert victim.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()[-3000:]

    stopped = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert stopped["interrupted"] is True and stopped["steps"] in (2, 3)
    ckpt = tmp_path / "stopped" / "checkpoints" / "interrupted.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == stopped["steps"]
    assert f"ckpt_path={ckpt}" in log.read_text()  # the resume command is printed

    marker = [MARKER, "+callbacks.marker.save_as=params.pt"]
    resumed = run_lam_train(
        [*TINY, *steps, *marker, f"hydra.run.dir={tmp_path}/resumed", f"ckpt_path={ckpt}"], tmp_path
    )
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    whole = run_lam_train([*TINY, *steps, *marker, f"hydra.run.dir={tmp_path}/whole"], tmp_path)
    assert whole.returncode == 0, (whole.stdout + whole.stderr)[-3000:]

    a, b = _params(tmp_path / "resumed" / "params.pt"), _params(tmp_path / "whole" / "params.pt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    m_resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    m_whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert m_resumed["interrupted"] is False and m_resumed["steps"] == 8
    # the whole history, before and after the interruption, bit for bit
    assert m_resumed["train_curve"] == m_whole["train_curve"]
    assert m_resumed["val_curve"] == m_whole["val_curve"]


@pytest.mark.timeout(400)
def test_concurrent_runs_never_share_a_run_dir(tmp_path):
    steps = [
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "plot=false",
    ]
    # two runs started together with the default run dir: two directories, two complete outputs
    logs = [tmp_path / f"default{i}.log" for i in range(2)]
    procs = [_start([*TINY, *steps], tmp_path, log) for log in logs]
    assert [p.wait(timeout=300) for p in procs] == [0, 0], [log.read_text()[-2000:] for log in logs]
    runs = sorted((tmp_path / "outputs" / "smoke" / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert json.loads((run / "metrics.json").read_text())["steps"] == 2

    # a run given the directory of a live run refuses it, naming the holder; the holder finishes
    log = tmp_path / "holder.log"
    release = tmp_path / "release"
    holder_args = [
        *TINY,
        *steps,
        MARKER,
        f"+callbacks.marker.hold_until={release}",
        f"hydra.run.dir={tmp_path}/shared",
    ]
    holder = _start(holder_args, tmp_path, log)
    _wait_for(log, "STEP 1", holder)  # it holds the directory (and waits) until `release` exists
    intruder = run_lam_train([*TINY, *steps, f"hydra.run.dir={tmp_path}/shared"], tmp_path)
    release.touch()
    assert intruder.returncode != 0
    assert f"in use by a live lam-train run (pid {holder.pid}" in intruder.stderr, intruder.stderr[-3000:]
    assert holder.wait(timeout=300) == 0, log.read_text()[-3000:]
    metrics = json.loads((tmp_path / "shared" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and any("hold_until" in o for o in metrics["overrides"])  # the holder's own
