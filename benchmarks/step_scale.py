"""Where per-step overhead ends and memory bandwidth rules: step time against model size.

Two sweeps, each optimizer's steps interleaved with the others' (medians):

* overhead: ``--small`` tensors of 64x64 (default 2,000: 8.2M params in many small pieces);
* per element: Llama-shaped fp32 models from ``--sizes`` (millions of params, real tensors);
  the time per million parameters flattens once bandwidth dominates.

    python benchmarks/step_scale.py                          # 2,000 small tensors; 10M, 30M, 100M
    python benchmarks/step_scale.py --sizes 10 30 100 300 1000   # needs ~20 GB for 1B (AdamW)
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from contenders import interleaved_step_seconds, machine_line
from torch import nn

from lightning_adam_mini import AdamMini
from lightning_adam_mini.app.models import Llama, LlamaConfig
from partitioners import BlockLayout, PartitionPlan, PlanEntry, name_partition

MakeOptimizer = Callable[[nn.Module, PartitionPlan], torch.optim.Optimizer]
CONTENDERS: dict[str, MakeOptimizer] = {
    "AdamMini eager": lambda m, plan: AdamMini(m, partition=plan, compile=False, fused=False),
    "AdamMini one-pass kernel": lambda m, plan: AdamMini(m, partition=plan, compile=False, fused=True),
    "AdamMini compiled": lambda m, plan: AdamMini(m, partition=plan, compile=True),
    "AdamW fused": lambda m, plan: torch.optim.AdamW(m.parameters(), fused=True),
}


def median_step_seconds(
    model: nn.Module, plan: PartitionPlan, rounds: int, names: list[str]
) -> dict[str, float]:
    """Each contender on its own copy of ``model`` (same grads); steps interleaved; medians."""
    runs = {}
    for name in names:
        make = CONTENDERS[name]
        copy = Llama(model.cfg) if isinstance(model, Llama) else _small_model(len(plan))
        copy.load_state_dict(model.state_dict())
        for p in copy.parameters():
            p.grad = torch.full_like(p, 1e-3)
        opt = make(copy, plan)
        for _ in range(2):  # state, compilation
            opt.step()
        runs[name] = opt
    return {name: statistics.median(t) for name, t in interleaved_step_seconds(runs, rounds).items()}


def _small_model(n: int) -> nn.Module:
    model = nn.Module()
    model.weights = nn.ParameterList([nn.Parameter(torch.zeros(64, 64)) for _ in range(n)])
    return model


def llama_of(millions: int) -> Llama:
    """A Llama of about ``millions`` M params: 8 layers, width solved for the size, vocab 8192."""
    dim = 128
    while True:
        cfg = LlamaConfig(
            vocab_size=8192,
            dim=dim,
            n_layers=8,
            n_heads=dim // 64,
            n_kv_heads=max(1, dim // 256),
            hidden_dim=int(dim * 8 / 3) // 64 * 64,
        )
        size = 2 * cfg.vocab_size * dim + cfg.n_layers * (2.5 * dim * dim + 3 * dim * cfg.hidden_dim)
        if size >= millions * 1e6:
            return Llama(cfg)
        dim += 128


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=2000, help="number of 64x64 tensors (0: skip)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[10, 30, 100], help="model sizes, M params")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument(
        "--small-skip",
        nargs="*",
        default=["AdamMini compiled"],
        help="contenders left out of the small-tensor row (compiling 2,000 tensors takes 10+ min on 2 cores)",
    )
    args = ap.parse_args()
    print(
        f"torch {torch.__version__}; {torch.get_num_threads()} threads; medians of {args.rounds} interleaved steps\n"
    )
    names = list(CONTENDERS)
    print("| model | params | " + " | ".join(f"{n}, ms (ns/param)" for n in names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    rows: list[tuple[str, nn.Module, PartitionPlan]] = []
    if args.small:
        small = _small_model(args.small)
        plan = PartitionPlan(
            {f"weights.{i}": PlanEntry((64, 64), "linear", BlockLayout.rows(0)) for i in range(args.small)}
        )
        rows.append((f"{args.small} tensors of 64x64", small, plan))
    for millions in args.sizes:
        torch.manual_seed(0)
        model = llama_of(millions)
        cfg = model.cfg
        plan = name_partition(model, dim=cfg.dim, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads)
        rows.append((f"Llama dim={cfg.dim}", model, plan))
    for label, model, plan in rows:
        n = sum(p.numel() for p in model.parameters())
        skip = args.small_skip if not isinstance(model, Llama) else []
        seconds = median_step_seconds(model, plan, args.rounds, [k for k in names if k not in skip])
        cells = " | ".join(
            f"{seconds[k] * 1e3:.1f} ({seconds[k] / n * 1e9:.2f})" if k in seconds else "-" for k in names
        )
        print(f"| {label} | {n / 1e6:.1f}M | {cells} |", flush=True)
        if isinstance(model, Llama):
            print(f"<!-- {machine_line(model, model.cfg, torch.device('cpu'))} -->")
        del model


if __name__ == "__main__":
    main()
