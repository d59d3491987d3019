"""Lightning's own strategies on CPU: 2 gloo processes on 127.0.0.1 against one process with the
same global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_adam_mini import AdamMiniCallback, auto_partition
from partitioners import PartitionPlan
from tests.lightning.distributed import run_ranks
from tests.lightning.lit_gpt import LitGPT, example_tokens, trainer
from tests.lightning.train_script import state_bytes

pytestmark = pytest.mark.distributed


def single_process(arch: str, steps: int, batch: int) -> tuple[dict[str, torch.Tensor], int]:
    """The reference: one process, global batch ``batch``; its params and state bytes."""
    module = LitGPT(arch=arch, batch_size=batch, weight_decay=0.1)
    t = trainer(max_steps=steps, callbacks=[AdamMiniCallback(show=False)])
    t.fit(module)
    return {n: p.detach().clone() for n, p in module.named_parameters()}, state_bytes(t.optimizers[0])


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[n] - b[n]).abs().max().item() for n in a)


def read_plans(out: Path, tag: str, world: int = 2) -> list[PartitionPlan]:
    return [PartitionPlan.from_yaml((out / f"{tag}_plan_rank{r}.yaml").read_text()) for r in range(world)]


def test_ddp_matches_one_process_with_the_global_batch(tmp_path):
    steps = 4
    run_ranks(["--run", "ddp", "--out", str(tmp_path), "--steps", str(steps), "--batch", "8"])
    ddp = torch.load(tmp_path / "run_params.pt")
    ref, _ = single_process("llama", steps, batch=16)
    assert max_diff(ddp, ref) <= 1e-6
    # DDP keeps replicas identical: every rank's plan is the one traced once on rank 0
    plans = read_plans(tmp_path, "run")
    assert plans[0] == plans[1] == auto_partition(LitGPT(), (example_tokens(),))
