"""A callback for subprocess tests: prints ``STEP n`` after each training step, then pauses, so a
test can signal a run known to be mid-training; ``hold_until`` keeps it after its first step until
that file exists (at most 5 minutes); ``save_as`` saves the final weights under that file name in
the run directory (the Trainer's ``default_root_dir``)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class StepMarker(Callback):
    def __init__(self, pause: float = 0.0, save_as: str | None = None, hold_until: str | None = None) -> None:
        self.pause = pause
        self.save_as = save_as
        self.hold_until = hold_until

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        print(f"STEP {trainer.global_step}", flush=True)
        time.sleep(self.pause)
        deadline = time.monotonic() + 300
        while self.hold_until and not Path(self.hold_until).exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.save_as is not None:
            torch.save(pl_module.state_dict(), Path(trainer.default_root_dir) / self.save_as)
