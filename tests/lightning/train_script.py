"""Training runs for the Lightning tests, one per ``--run`` (ddp | fsdp2 | single), each writing
its final parameters (full tensors), its plan and its optimizer-state bytes to ``--out``.

Used by the distributed tests (2 ranks, gloo, started by ``distributed.run_ranks``) and by the
fault test (single process, killed and resumed). Every run is seeded and deterministic."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lightning_adam_mini import AdamMiniCallback
from lightning_adam_mini.sharded import local_tensor
from tests.lightning.lit_gpt import LitGPT, trainer


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of optimizer state this rank holds (local shards of DTensors)."""
    return sum(
        local_tensor(v).numel() * local_tensor(v).element_size()
        for s in opt.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    )


class SignalAfterCheckpoint(Callback):
    """Once step ``step`` is done (and its checkpoint written: Lightning runs ModelCheckpoint
    last in each hook), prints a marker at the start of the next step and waits to be killed."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            print(f"CHECKPOINTED {self.step}", flush=True)
            time.sleep(120)


def fit(
    args: argparse.Namespace,
    arch: str,
    steps: int,
    tag: str,
    out: Path,
    resume: str | None = None,
    save: Path | None = None,
) -> None:
    """One training run; writes ``{tag}_params.pt`` (rank 0), ``{tag}_plan_rank{r}.yaml`` and
    ``{tag}_state_bytes_rank{r}``; saves a checkpoint to ``save`` at the end if given."""
    module = LitGPT(arch=arch, batch_size=args.batch, n=args.n, fsdp=args.run == "fsdp2", weight_decay=0.1)
    callbacks: list[Callback] = [AdamMiniCallback(show=False)]
    kwargs = {}
    if args.ckpt_dir:
        ckpt = ModelCheckpoint(dirpath=args.ckpt_dir, every_n_train_steps=1, save_last=True, save_top_k=0)
        callbacks.append(ckpt)
        kwargs["enable_checkpointing"] = True
        if args.signal_at is not None:
            callbacks.append(SignalAfterCheckpoint(args.signal_at))
    if args.run == "ddp":
        kwargs.update(devices=2, strategy=DDPStrategy(process_group_backend="gloo"))
    elif args.run == "fsdp2":
        kwargs.update(devices=2, strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1))
    t = trainer(max_steps=steps, callbacks=callbacks, **kwargs)
    t.fit(module, ckpt_path=resume)
    if save is not None:
        t.save_checkpoint(save)

    opt = t.optimizers[0]
    rank = t.global_rank
    params = {n: full(p.detach()).clone() for n, p in module.named_parameters()}
    (out / f"{tag}_plan_rank{rank}.yaml").write_text(opt.plan.to_yaml())
    (out / f"{tag}_state_bytes_rank{rank}").write_text(str(state_bytes(opt)))
    torch.save(params, out / f"{tag}_params_rank{rank}.pt")
    if rank == 0:
        torch.save(params, out / f"{tag}_params.pt")
    print(f"DONE {tag} rank {rank} step {t.global_step}", flush=True)


def refuse_to_trace() -> None:
    import lightning_adam_mini.binding

    def auto_partition(*args, **kwargs):
        raise AssertionError(f"rank {os.environ['RANK']} traced the model: only rank 0 may")

    lightning_adam_mini.binding.auto_partition = auto_partition


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, choices=["ddp", "fsdp2", "single"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", default="llama", help="comma-separated: one run each")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8, help="per rank")
    ap.add_argument(
        "--n",
        type=int,
        default=64,
        help="samples; n = global batch makes every step an epoch "
        "(exact resume: Lightning can't resume a plain DataLoader mid-epoch)",
    )
    ap.add_argument("--ckpt-dir", default=None, help="save a checkpoint every step here")
    ap.add_argument("--resume", default=None, help="ckpt_path for fit ('last' or a path)")
    ap.add_argument("--signal-at", type=int, default=None)
    ap.add_argument(
        "--resume-at",
        type=int,
        default=None,
        help="also train to this step, save, and resume from there to --steps",
    )
    ap.add_argument("--tag", default="run")
    ap.add_argument(
        "--trace-on-rank0-only",
        action="store_true",
        help="make tracing fail on every other rank: their plan must come from rank 0",
    )
    args = ap.parse_args()
    if args.trace_on_rank0_only and int(os.environ.get("RANK", "0")) != 0:
        refuse_to_trace()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    archs = args.arch.split(",")
    for arch in archs:
        tag = args.tag if len(archs) == 1 else f"{args.tag}_{arch}"
        fit(args, arch, args.steps, tag, out, resume=args.resume)
        if args.resume_at is not None:
            saved = out / f"{tag}_step{args.resume_at}.ckpt"
            fit(args, arch, args.resume_at, f"{tag}_half", out, save=saved)
            fit(args, arch, args.steps, f"{tag}_resumed", out, resume=str(saved))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
