"""Optimizer step time and state memory: AdamMini (eager, compiled) vs torch AdamW and official Adam_mini.

One process, one Llama-shaped fp32 model per contender (same init, same fixed gradients); the
contenders' steps are interleaved round by round and the medians are reported, so machine noise
hits all of them alike.

    python benchmarks/step.py                 # ~32M params, CPU
    python benchmarks/step.py --device cuda --dim 1024 --layers 12
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable

import torch

from lightning_adam_mini import AdamMini
from lightning_adam_mini.app.models import Llama, LlamaConfig
from lightning_adam_mini.stats import optimizer_state_bytes
from partitioners import name_partition


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def contenders(
    model: Llama, cfg: LlamaConfig
) -> dict[str, Callable[[torch.nn.Module], torch.optim.Optimizer]]:
    plan = name_partition(model, dim=cfg.dim, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads)
    out = {
        "AdamMini eager": lambda m: AdamMini(m, partition=plan, weight_decay=0.1),
        "AdamMini compiled": lambda m: AdamMini(m, partition=plan, weight_decay=0.1, compile=True),
        "AdamMini compiled, bf16 m": lambda m: AdamMini(
            m, partition=plan, weight_decay=0.1, compile=True, exp_avg_dtype=torch.bfloat16
        ),
        "AdamW foreach": lambda m: torch.optim.AdamW(m.parameters(), weight_decay=0.1, foreach=True),
        "AdamW fused": lambda m: torch.optim.AdamW(m.parameters(), weight_decay=0.1, fused=True),
    }
    try:
        from adam_mini import Adam_mini

        out["official Adam_mini"] = lambda m: Adam_mini(
            m.named_parameters(),
            weight_decay=0.1,
            dim=cfg.dim,
            n_heads=cfg.n_heads,
            n_kv_heads=cfg.n_kv_heads,
            verbose=False,
        )
    except ImportError:
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    cfg = LlamaConfig(
        vocab_size=args.vocab,
        dim=args.dim,
        n_layers=args.layers,
        n_heads=args.dim // 64,
        n_kv_heads=max(1, args.dim // 128),
        hidden_dim=int(args.dim * 8 / 3) // 64 * 64,
    )
    torch.manual_seed(0)
    base = Llama(cfg).to(device)
    n_params = sum(p.numel() for p in base.parameters())
    grads = [torch.randn_like(p) * 1e-3 for p in base.parameters()]

    runs = {}
    for name, make in contenders(base, cfg).items():
        model = copy.deepcopy(base)
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        opt = make(model)
        t0 = time.perf_counter()
        for _ in range(args.warmup):  # includes compilation for the compiled contenders
            opt.step()
        sync(device)
        runs[name] = {"opt": opt, "times": [], "warmup_s": time.perf_counter() - t0}

    for _ in range(args.rounds):
        for run in runs.values():
            sync(device)
            t0 = time.perf_counter()
            run["opt"].step()
            sync(device)
            run["times"].append(time.perf_counter() - t0)

    ref_ms = statistics.median(runs["AdamW fused"]["times"]) * 1e3
    ref_bytes = optimizer_state_bytes([runs["AdamW fused"]["opt"]])
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    )
    print(
        f"Llama dim={cfg.dim} layers={cfg.n_layers} vocab={cfg.vocab_size}: {n_params / 1e6:.1f}M fp32 params; "
        f"{device.type} ({where}); torch {torch.__version__}; median of {args.rounds} interleaved steps"
    )
    print()
    print("| optimizer | ms/step | vs AdamW fused | state MB | state vs AdamW |")
    print("|---|---:|---:|---:|---:|")
    for name, run in runs.items():
        ms = statistics.median(run["times"]) * 1e3
        sb = optimizer_state_bytes([run["opt"]])
        print(f"| {name} | {ms:.1f} | {ms / ref_ms:.2f}x | {sb / 2**20:.1f} | {sb / ref_bytes:.4f} |")
    if "official Adam_mini" in runs:
        official = statistics.median(runs["official Adam_mini"]["times"])
        compiled = statistics.median(runs["AdamMini compiled"]["times"])
        print(f"\nAdamMini compiled is {official / compiled:.1f}x faster than official Adam_mini")
    if device.type == "cuda":
        # achieved bandwidth against a measured device copy of the same bytes
        numel = n_params
        src = torch.empty(numel, device=device)
        dst = torch.empty_like(src)
        times = []
        for _ in range(10):
            sync(device)
            t0 = time.perf_counter()
            dst.copy_(src)
            sync(device)
            times.append(time.perf_counter() - t0)
        copy_gbs = 2 * numel * 4 / statistics.median(times) / 1e9
        compiled = statistics.median(runs["AdamMini compiled"]["times"])
        mini_gbs = 6 * numel * 4 / compiled / 1e9  # read p, g, m, g again; write p, m
        print(
            f"device copy {copy_gbs:.0f} GB/s; AdamMini compiled moves {mini_gbs:.0f} GB/s "
            f"({mini_gbs / copy_gbs:.0%} of copy)"
        )


if __name__ == "__main__":
    main()
