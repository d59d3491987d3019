"""Loss-curve figures (one run, or every run of a sweep coloured by its setting)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure


def smooth(values: Sequence[float], beta: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def plot_loss_curves(runs: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Save a PNG: smoothed train loss (thin) and val loss (markers) of each run.

    ``runs``: dicts with ``label``, ``train_curve`` and ``val_curve`` (lists of (step, loss));
    runs sharing a label share a colour (e.g. the seeds of one setting).
    """
    fig = Figure(figsize=(8, 5), dpi=110)
    ax = fig.add_subplot()
    colours: dict[str, str] = {}
    for run in runs:
        label = run["label"]
        first = label not in colours
        colour = colours.setdefault(label, f"C{len(colours) % 10}")
        if run["train_curve"]:
            steps, losses = zip(*run["train_curve"])
            ax.plot(steps, smooth(losses), color=colour, lw=0.8, alpha=0.45,
                    label=f"{label} (train, smoothed)" if first else None)
        if run["val_curve"]:
            steps, losses = zip(*run["val_curve"])
            ax.plot(steps, losses, "o-", color=colour, lw=1.5, ms=3, label=f"{label} (val)" if first else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
