"""Convolution blocks: one v per output channel, or one per tensor? Decided by training.

Trains the small ResNet-style ConvNet on the synthetic shapes task (no download) with AdamMini,
the conv weights partitioned per output channel (rows along dim 0) or as one block per tensor,
everything else as auto_partition decides; AdamW as a reference. Same lr, same data order, several
seeds; prints final validation loss and accuracy (mean ± std).

    python benchmarks/conv_blocks.py --seeds 3 --steps 400
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lightning_adam_mini import AdamMini
from lightning_adam_mini.app.models.convnet import ConvNet, ConvNetConfig
from lightning_adam_mini.app.shapes_data import make_shapes
from partitioners import auto_partition

CONV_LAYOUTS = {"per channel": {"kind": "rows", "axis": 0}, "per tensor": {"kind": "tensor"}}


def make_optimizers(lr: float) -> dict[str, Callable[[nn.Module, torch.Tensor], torch.optim.Optimizer]]:
    def adam_mini(conv_layout):
        def build(model, x):
            rules = [{"module": "Conv2d", "role": "conv", "layout": conv_layout}]
            plan = auto_partition(model, (x,), overrides=rules)
            return AdamMini(model, partition=plan, lr=lr, weight_decay=0.05)

        return build

    opts = {f"AdamMini, conv {k}": adam_mini(v) for k, v in CONV_LAYOUTS.items()}
    opts["AdamW"] = lambda model, x: torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    return opts


def run(build, seed: int, steps: int, data) -> tuple[float, float]:
    (xt, yt), (xv, yv) = data
    torch.manual_seed(seed)
    model = ConvNet(ConvNetConfig(width=16, n_blocks=3))
    opt = build(model, xt[:64])
    order = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (64,), generator=order)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xt[idx]), yt[idx]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(xv)
    return F.cross_entropy(logits, yv).item(), (logits.argmax(1) == yv).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x, y = make_shapes(6144, 16, 0.6, g)
    data = ((x[:4096], y[:4096]), (x[4096:], y[4096:]))
    results: dict[str, list[tuple[float, float]]] = {}
    for seed in range(args.seeds):  # interleaved by seed
        for name, build in make_optimizers(args.lr).items():
            results.setdefault(name, []).append(run(build, seed, args.steps, data))
    print(
        f"ConvNet(width=16, n_blocks=3) on 16x16 synthetic shapes (noise 0.6), {args.steps} steps, "
        f"batch 64, lr {args.lr}, {args.seeds} seeds"
    )
    print("| optimizer | val loss | val accuracy |\n|---|---:|---:|")
    for name, rs in results.items():
        losses, accs = [r[0] for r in rs], [r[1] for r in rs]
        sd = statistics.stdev if len(rs) > 1 else (lambda v: 0.0)
        print(
            f"| {name} | {statistics.mean(losses):.4f} ± {sd(losses):.4f} "
            f"| {statistics.mean(accs):.4f} ± {sd(accs):.4f} |"
        )


if __name__ == "__main__":
    main()
