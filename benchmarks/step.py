"""Optimizer step time: AdamMini (eager, compiled; fp32 or bf16 m) vs torch AdamW and official Adam_mini.

One process, one Llama-shaped model per contender (same init, same fixed gradients); the
contenders' steps are interleaved round by round and the medians are reported, so machine noise
hits all of them alike. Next to each time: the bytes the step must move at least (read and write
``p`` and the state, read ``g``) per second, against a measured copy of the same bytes.

    python benchmarks/step.py                          # ~30M fp32 params, CPU
    python benchmarks/step.py --dtype bfloat16         # bf16 params (m bf16 too)
    python benchmarks/step.py --device cuda --dim 1024 --layers 12
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from contenders import add_model_args, compulsory_bytes, contenders, machine_line, model_from_args

from lightning_adam_mini.stats import optimizer_state_bytes


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_buffers(nbytes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``src, dst`` such that ``dst.copy_(src)`` moves ``nbytes`` in all (half read, half written)."""
    src = torch.ones(max(1, nbytes // 8), dtype=torch.float32, device=device)
    return src, torch.ones_like(src)  # both touched: no page faults inside the timing


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    base, cfg, device = model_from_args(args)
    grads = [torch.randn_like(p) * 1e-3 for p in base.parameters()]

    runs = {}
    for name, make in contenders(base, cfg).items():
        if args.dtype != "float32" and "bf16 m" in name:
            continue  # m already has the params' dtype
        model = copy.deepcopy(base)
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        opt = make(model)
        t0 = time.perf_counter()
        for _ in range(args.warmup):  # includes compilation for the compiled contenders
            opt.step()
        sync(device)
        runs[name] = {"opt": opt, "times": [], "warmup_s": time.perf_counter() - t0}

    src, dst = copy_buffers(compulsory_bytes(runs["AdamW fused"]["opt"]), device)
    copy_times = []
    for _ in range(args.rounds):
        for run in runs.values():
            run["times"].append(timed(run["opt"].step, device))
        copy_times.append(timed(lambda: dst.copy_(src), device))

    ref_s = statistics.median(runs["AdamW fused"]["times"])
    ref_state = optimizer_state_bytes([runs["AdamW fused"]["opt"]])
    copy_gbs = compulsory_bytes(runs["AdamW fused"]["opt"]) / statistics.median(copy_times) / 1e9
    print(f"{machine_line(base, cfg, device)}; median of {args.rounds} interleaved steps")
    print(f"memory copy of AdamW's bytes, interleaved with the steps: {copy_gbs:.1f} GB/s\n")
    print("| optimizer | ms/step | vs AdamW fused | GB/s moved | of copy | state vs AdamW | first steps, s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, run in runs.items():
        s = statistics.median(run["times"])
        gbs = compulsory_bytes(run["opt"]) / s / 1e9
        state = optimizer_state_bytes([run["opt"]]) / ref_state
        print(
            f"| {name} | {s * 1e3:.1f} | {s / ref_s:.2f}x | {gbs:.1f} | {gbs / copy_gbs:.0%} | {state:.3f} "
            f"| {run['warmup_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
