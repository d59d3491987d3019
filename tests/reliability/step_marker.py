"""A callback for subprocess tests: prints ``STEP n`` after each training step, then pauses, so a
test can send a signal while the run is known to be in the middle of training."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback


class StepMarker(Callback):
    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        print(f"STEP {trainer.global_step}", flush=True)
        time.sleep(self.pause)
