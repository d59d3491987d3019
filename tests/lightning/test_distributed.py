"""Lightning's own strategies on CPU: 2 gloo processes on 127.0.0.1 against one process with the
same global batch."""

from __future__ import annotations

import functools
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
    run_ranks(
        [
            "--run",
            "ddp",
            "--out",
            str(tmp_path),
            "--steps",
            str(steps),
            "--batch",
            "8",
            "--trace-on-rank0-only",
        ]
    )
    ddp = torch.load(tmp_path / "run_params_rank0.pt")
    assert max_diff(torch.load(tmp_path / "run_params_rank1.pt"), ddp) == 0.0  # replicas identical
    ref, _ = single_process("llama", steps, batch=16)
    assert max_diff(ddp, ref) <= 1e-6
    # every rank's plan is the one traced on rank 0 (tracing fails on rank 1) and broadcast
    plans = read_plans(tmp_path, "run")
    assert plans[0] == plans[1] == auto_partition(LitGPT(), (example_tokens(),))


FSDP2_ARCHS = ("odd_llama", "odd_gpt")
FSDP2_STEPS, FSDP2_RESUME_AT = 4, 2
# n = global batch: every step is one epoch, so a checkpoint resumes exactly (a plain DataLoader
# can't be resumed mid-epoch by Lightning).
FSDP2_N = 16


@pytest.fixture(scope="module")
def fsdp2_runs(tmp_path_factory) -> Path:
    """One launch of 2 ranks under ModelParallelStrategy + fully_shard, per arch: 4 steps
    uninterrupted; 2 steps + torch.distributed.checkpoint save; resume from it to step 4."""
    out = tmp_path_factory.mktemp("fsdp2")
    run_ranks(
        [
            "--run",
            "fsdp2",
            "--out",
            str(out),
            "--arch",
            ",".join(FSDP2_ARCHS),
            "--steps",
            str(FSDP2_STEPS),
            "--resume-at",
            str(FSDP2_RESUME_AT),
            "--batch",
            "8",
            "--n",
            str(FSDP2_N),
            "--trace-on-rank0-only",
        ],
        timeout=240,
    )
    return out


@functools.cache
def unsharded(arch: str) -> tuple[dict[str, torch.Tensor], int]:
    module = LitGPT(arch=arch, batch_size=16, n=FSDP2_N, weight_decay=0.1)
    t = trainer(max_steps=FSDP2_STEPS, callbacks=[AdamMiniCallback(show=False)])
    t.fit(module)
    return {n: p.detach().clone() for n, p in module.named_parameters()}, state_bytes(t.optimizers[0])


@pytest.mark.parametrize("arch", FSDP2_ARCHS)
def test_fsdp2_matches_the_unsharded_run(fsdp2_runs, arch):
    sharded = torch.load(fsdp2_runs / f"run_{arch}_params.pt")
    ref = dict(unsharded(arch)[0])
    if arch == "odd_gpt":
        # The key bias's exact gradient is 0 (softmax ignores a shift of all keys), so its
        # per-element (plain Adam) update is rounding noise normalized to ~lr: any change in
        # summation order moves it. Both runs keep it tiny; everything else must agree.
        name = "model.transformer.h.0.attn.c_attn.bias"
        k = slice(24, 48)
        assert sharded[name][k].abs().max() < 1e-5 and ref[name][k].abs().max() < 1e-5
        sharded[name] = torch.cat([sharded[name][:24], ref[name][k], sharded[name][48:]])
    assert max_diff(sharded, ref) <= 1e-6


@pytest.mark.parametrize("arch", FSDP2_ARCHS)
def test_fsdp2_plan_is_the_unsharded_plan_on_every_rank(fsdp2_runs, arch):
    """Rank 1 cannot trace (--trace-on-rank0-only): its plan is rank 0's, broadcast."""
    plans = read_plans(fsdp2_runs, f"run_{arch}")
    assert plans[0] == plans[1] == auto_partition(LitGPT(arch=arch), (example_tokens(),))
    if arch == "odd_llama":  # the geometry this test is about
        q, k = (
            plans[0]["model.layers.0.self_attn.q_proj.weight"],
            plans[0]["model.layers.0.self_attn.k_proj.weight"],
        )
        assert (q.shape, q.layout.group, k.shape, k.layout.group) == ((24, 24), 8, (8, 24), 8)


@pytest.mark.parametrize("arch", FSDP2_ARCHS)
def test_fsdp2_optimizer_state_is_sharded(fsdp2_runs, arch):
    _, ref_bytes = unsharded(arch)
    per_rank = [int((fsdp2_runs / f"run_{arch}_state_bytes_rank{r}").read_text()) for r in range(2)]
    for b in per_rank:
        assert 0.45 <= b / ref_bytes <= 0.56, (per_rank, ref_bytes)


@pytest.mark.parametrize("arch", FSDP2_ARCHS)
def test_fsdp2_checkpoint_resume_continues_exactly(fsdp2_runs, arch):
    full = torch.load(fsdp2_runs / f"run_{arch}_params.pt")
    resumed = torch.load(fsdp2_runs / f"run_{arch}_resumed_params.pt")
    assert (fsdp2_runs / f"run_{arch}_step{FSDP2_RESUME_AT}.ckpt").is_dir()  # a DCP checkpoint
    assert max_diff(resumed, full) == 0.0
