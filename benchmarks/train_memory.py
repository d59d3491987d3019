"""Training memory on CPU: peak RSS above the model's own bytes, per optimizer, real tensors.

Each contender runs in a fresh process (so one's freed memory can't hide another's peak): build a
Llama-shaped fp32 model, reset the peak-RSS mark, train a few steps (batch 1, short sequences, so
activations are small next to parameters), and report the peak resident memory above what the
process held right after building the model.

    python benchmarks/train_memory.py --dim 512 --layers 4               # ~30M params, seconds
    python benchmarks/train_memory.py --dim 2048 --layers 20 --vocab 32000 \\
        --plot docs/train_memory.png                                      # ~1.0B params, ~20 GB peak

The chart (``--plot``) shows the extra bytes per parameter of each contender.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = (
    "AdamW fused",
    "AdamMini",
    "AdamMini, bf16 m",
    "AdamMini in backward",
    "AdamMini in backward, bf16 m",
)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_one(name: str, dim: int, layers: int, vocab: int, steps: int) -> dict[str, float]:
    """Train ``steps`` steps with contender ``name``; return byte counts (this process only)."""
    import torch

    from lightning_adam_mini import AdamMini
    from lightning_adam_mini.app.models import Llama, LlamaConfig
    from partitioners import name_partition

    cfg = LlamaConfig(
        vocab_size=vocab,
        dim=dim,
        n_layers=layers,
        n_heads=dim // 128,
        n_kv_heads=max(1, dim // 512),
        hidden_dim=int(dim * 8 / 3) // 64 * 64,
        max_seq_len=64,
    )
    torch.manual_seed(0)
    model = Llama(cfg)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    plan = name_partition(model, dim=cfg.dim, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads)
    if name == "AdamW fused":
        opt: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    else:
        opt = AdamMini(
            model,
            partition=plan,
            lr=1e-4,
            exp_avg_dtype=torch.bfloat16 if "bf16" in name else None,
            step_in_backward="in backward" in name,
            compile=False,  # the default ("auto") would compile a 1B model: same memory, longer run
        )
    base_kib = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak) to the current RSS
    x = torch.randint(0, vocab, (1, 33), generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        logits = model(x[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak_kib = _status_kib("VmHWM")
    return {"param_bytes": param_bytes, "extra_bytes": (peak_kib - base_kib) * 1024.0}


def plot(rows: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    per_param = [rows[n]["extra_bytes"] / (rows[n]["param_bytes"] / 4) for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bars = ax.barh(names[::-1], per_param[::-1], color=["#4c72b0"] * (len(names) - 1) + ["#c44e52"])
    ax.bar_label(bars, fmt="%.1f B")
    ax.set_xlabel("peak training memory above the fp32 model, bytes per parameter")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, max(per_param) * 1.2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--plot", type=Path, default=None, help="write a bar chart PNG here")
    ap.add_argument("--replot", type=Path, default=None, help="redraw --plot from a saved .json")
    ap.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.dim, args.layers, args.vocab, args.steps)))
        return
    if args.replot:
        saved = json.loads(args.replot.read_text())
        plot(saved["rows"], args.plot, saved["title"])
        return

    import torch

    rows = {}
    for name in CONTENDERS:
        cmd = [sys.executable, __file__, "--one", name, "--dim", str(args.dim), "--layers", str(args.layers)]
        cmd += ["--vocab", str(args.vocab), "--steps", str(args.steps)]
        # the child imports this checkout's package, like the parent run from the repository root
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        rows[name] = json.loads(out.strip().splitlines()[-1])
    params = rows[CONTENDERS[0]]["param_bytes"] / 4
    ref = rows["AdamW fused"]["extra_bytes"]
    title = (
        f"Llama dim={args.dim} layers={args.layers} vocab={args.vocab}: {params / 1e9:.2f}B fp32 params,\n"
        f"{args.steps} training steps on CPU ({platform.machine()}), torch {torch.__version__}"
    )
    print(title.replace("\n", " ") + "\n")
    print("| optimizer | peak above model, GB | bytes/param | vs AdamW |")
    print("|---|---:|---:|---:|")
    for name, row in rows.items():
        extra = row["extra_bytes"]
        print(f"| {name} | {extra / 1e9:.2f} | {extra / params:.1f} | {extra / ref:.2f}x |")
    if args.plot:
        plot(rows, args.plot, title)
        args.plot.with_suffix(".json").write_text(json.dumps({"title": title, "rows": rows}, indent=1))
        print(f"\nchart written to {args.plot} (figures in {args.plot.with_suffix('.json')})")


if __name__ == "__main__":
    main()
