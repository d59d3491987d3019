"""Fault tolerance: a run killed with SIGKILL after a checkpoint, resumed with ckpt_path="last",
ends bit-identical (CPU) to the uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import torch

from tests.lightning.distributed import ROOT, SCRIPT

STEPS, KILL_AFTER = 6, 3
# one step per epoch (n = batch): a plain DataLoader resumes exactly only at epoch boundaries
ARGS = ["--run", "single", "--steps", str(STEPS), "--batch", "16", "--n", "16"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def train(*extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *ARGS, *extra],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_sigkill_after_checkpoint_then_resume_last_is_bit_identical(tmp_path):
    ckpts = tmp_path / "ckpts"
    victim = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            *ARGS,
            "--out",
            str(tmp_path),
            "--tag",
            "killed",
            "--ckpt-dir",
            str(ckpts),
            "--signal-at",
            str(KILL_AFTER),
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in victim.stdout:  # wait for the marker: step KILL_AFTER is checkpointed
            lines.append(line)
            if line.startswith("CHECKPOINTED"):
                break
        else:
            raise AssertionError("training ended without the checkpoint marker:\n" + "".join(lines[-40:]))
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
    assert not (tmp_path / "killed_params.pt").exists()  # it really died mid-run
    last = torch.load(ckpts / "last.ckpt", weights_only=False)
    assert last["global_step"] == KILL_AFTER

    done = train("--out", str(tmp_path), "--tag", "resumed", "--ckpt-dir", str(ckpts), "--resume", "last")
    log = done.stdout + done.stderr
    assert f"Restoring states from the checkpoint path at {ckpts / 'last.ckpt'}" in log
    assert f"DONE resumed rank 0 step {STEPS}" in log
    train("--out", str(tmp_path), "--tag", "uninterrupted")
    resumed = torch.load(tmp_path / "resumed_params.pt")
    uninterrupted = torch.load(tmp_path / "uninterrupted_params.pt")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.equal(resumed[name], uninterrupted[name]), name
