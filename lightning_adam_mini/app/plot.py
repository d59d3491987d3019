"""Loss-curve figures (one run, or every run of a sweep coloured by its setting)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure


def smooth(values: Sequence[float], beta: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def _draw(ax: Axes, runs: Sequence[dict], from_step: int = 0) -> None:
    colours: dict[str, str] = {}
    for run in runs:
        label = run["label"]
        first = label not in colours
        colour = colours.setdefault(label, f"C{len(colours) % 10}")
        train = [
            (s, v)
            for s, v in zip((s for s, _ in run["train_curve"]), smooth([v for _, v in run["train_curve"]]))
            if s >= from_step
        ]
        val = [(s, v) for s, v in run["val_curve"] if s >= from_step]
        if train:
            ax.plot(
                *zip(*train),
                color=colour,
                lw=0.8,
                alpha=0.45,
                label=f"{label} (train, smoothed)" if first else None,
            )
        if val:
            ax.plot(*zip(*val), "o-", color=colour, lw=1.5, ms=3, label=f"{label} (val)" if first else None)
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)


def plot_loss_curves(runs: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Save a PNG: smoothed train loss (thin) and val loss (markers) of each run; left the whole
    run, right its second half (where the settings differ).

    ``runs``: dicts with ``label``, ``train_curve`` and ``val_curve`` (lists of (step, loss));
    runs sharing a label share a colour (e.g. the seeds of one setting).
    """
    fig = Figure(figsize=(12, 5), dpi=100)
    whole, late = fig.subplots(1, 2)
    last = max((s for r in runs for s, _ in r["train_curve"] + r["val_curve"]), default=0)
    _draw(whole, runs)
    _draw(late, runs, from_step=last // 2)
    whole.set_ylabel("cross-entropy loss")
    whole.set_title(title)
    late.set_title(f"steps >= {last // 2}")
    whole.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
