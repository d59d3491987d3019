"""Fault tolerance: a run killed with SIGKILL after a checkpoint, resumed with ckpt_path="last",
ends bit-identical (CPU) to the uninterrupted run."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import IO

import pytest
import torch

from tests.lightning.distributed import ROOT, SCRIPT

STEPS, KILL_AFTER = 6, 3
# one step per epoch (n = batch): a plain DataLoader resumes exactly only at epoch boundaries
ARGS = ["--run", "single", "--steps", str(STEPS), "--batch", "16", "--n", "16"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
MARKER_TIMEOUT_S = 120  # a child that hangs before its checkpoint fails the test instead of hanging it


def lines_until(stream: IO[str], prefix: str, timeout: float) -> list[str]:
    """The lines read from ``stream`` up to the first one starting with ``prefix``.

    A reader thread feeds a queue, so a child that stops writing (hung, or stuck before the
    marker) raises ``AssertionError`` after ``timeout`` seconds instead of blocking forever.
    """
    pipe: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            pipe.put(line)
        pipe.put(None)  # end of output

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while True:
        try:
            line = pipe.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {prefix!r} line within {timeout} s:\n" + "".join(lines[-40:])) from None
        if line is None:
            raise AssertionError(f"the output ended without a {prefix!r} line:\n" + "".join(lines[-40:]))
        lines.append(line)
        if line.startswith(prefix):
            return lines


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
        assert victim.stdout is not None
        lines_until(victim.stdout, "CHECKPOINTED", MARKER_TIMEOUT_S)  # step KILL_AFTER is checkpointed
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


def test_waiting_for_a_marker_times_out_on_a_silent_child():
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        start = time.monotonic()
        with pytest.raises(AssertionError, match="no 'CHECKPOINTED' line within 1.0 s:\nstarted"):
            lines_until(child.stdout, "CHECKPOINTED", 1.0)
        assert time.monotonic() - start < 30
    finally:
        child.kill()
        child.wait()
