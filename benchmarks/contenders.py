"""What the step benchmarks compare: the optimizers, the Llama-shaped model, the machine line."""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch
from torch import nn

from lightning_adam_mini import AdamMini
from lightning_adam_mini.app.models import Llama, LlamaConfig
from partitioners import name_partition

MakeOptimizer = Callable[[nn.Module], torch.optim.Optimizer]


def llama_config(dim: int, layers: int, vocab: int) -> LlamaConfig:
    """Llama proportions: head size 64, 4 query heads per kv head, SwiGLU width 8/3 dim."""
    return LlamaConfig(
        vocab_size=vocab,
        dim=dim,
        n_layers=layers,
        n_heads=dim // 64,
        n_kv_heads=max(1, dim // 256),
        hidden_dim=int(dim * 8 / 3) // 64 * 64,
    )


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """The step benchmarks' shared options: the device and the Llama-shaped model's size/dtype."""
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])


def model_from_args(args: argparse.Namespace) -> tuple[Llama, LlamaConfig, torch.device]:
    """The seeded model that :func:`add_model_args`' options describe, on its device and dtype."""
    device = torch.device(args.device)
    cfg = llama_config(args.dim, args.layers, args.vocab)
    torch.manual_seed(0)
    return Llama(cfg).to(device=device, dtype=getattr(torch, args.dtype)), cfg, device


def contenders(model: Llama, cfg: LlamaConfig, official: bool = True) -> dict[str, MakeOptimizer]:
    """Each contender's factory (same hyperparameters: AdamW's defaults, weight decay 0.1)."""
    plan = name_partition(model, dim=cfg.dim, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads)
    bf16 = torch.bfloat16
    out: dict[str, MakeOptimizer] = {
        "AdamMini eager": lambda m: AdamMini(m, partition=plan, weight_decay=0.1, compile=False, fused=False),
        "AdamMini eager, bf16 m": lambda m: AdamMini(
            m, partition=plan, weight_decay=0.1, compile=False, fused=False, exp_avg_dtype=bf16
        ),
        "AdamMini compiled": lambda m: AdamMini(m, partition=plan, weight_decay=0.1, compile=True),
        "AdamMini compiled, bf16 m": lambda m: AdamMini(
            m, partition=plan, weight_decay=0.1, compile=True, exp_avg_dtype=bf16
        ),
        "AdamMini one-pass kernel": lambda m: AdamMini(
            m, partition=plan, weight_decay=0.1, compile=False, fused=True
        ),
        "AdamMini one-pass kernel, bf16 m": lambda m: AdamMini(
            m, partition=plan, weight_decay=0.1, compile=False, fused=True, exp_avg_dtype=bf16
        ),
        "AdamW foreach": lambda m: torch.optim.AdamW(m.parameters(), weight_decay=0.1, foreach=True),
        "AdamW fused": lambda m: torch.optim.AdamW(m.parameters(), weight_decay=0.1, fused=True),
    }
    if official:
        try:
            from adam_mini import Adam_mini
        except ImportError:
            return out
        out["official Adam_mini"] = lambda m: Adam_mini(
            m.named_parameters(),
            weight_decay=0.1,
            dim=cfg.dim,
            n_heads=cfg.n_heads,
            n_kv_heads=cfg.n_kv_heads,
            verbose=False,
        )
    return out


def compulsory_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes a step must move at least: read and write p and every state tensor, read g."""
    total = 0
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            total += 2 * p.numel() * p.element_size() + p.grad.numel() * p.grad.element_size()
            for t in opt.state[p].values():
                if isinstance(t, torch.Tensor):
                    total += 2 * t.numel() * t.element_size()
    return total


def machine_line(model: nn.Module, cfg: LlamaConfig, device: torch.device) -> str:
    n = sum(p.numel() for p in model.parameters())
    dtype = next(model.parameters()).dtype
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    return (
        f"Llama dim={cfg.dim} layers={cfg.n_layers} vocab={cfg.vocab_size}: {n / 1e6:.1f}M {dtype} params; "
        f"{device.type} ({where}); torch {torch.__version__}"
    )


def interleaved_step_seconds(
    optimizers: dict[str, torch.optim.Optimizer], rounds: int
) -> dict[str, list[float]]:
    """Seconds of each optimizer's ``step()`` per round, the contenders taking turns every round
    (so that the machine's drift hits them all alike)."""
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(rounds):
        for name, opt in optimizers.items():
            t0 = time.perf_counter()
            opt.step()
            times[name].append(time.perf_counter() - t0)
    return times
