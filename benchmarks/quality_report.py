"""Tables and plots of the training-quality study (``benchmarks/quality_study.sh``).

    python benchmarks/quality_report.py best-lr OUT/tune --optimizer adam_mini --model gpt_tiny
    python benchmarks/quality_report.py report OUT [--docs docs/quality]

``best-lr`` prints the lr whose run had the lowest *validation* loss. ``report`` writes
``quality.md`` (tables) and ``gap.png`` / ``frontier.png`` into ``--docs``:
every figure there is a *test* loss (the split the lr choice never saw), mean ± std over seeds;
the gap pairs the two optimizers' runs seed by seed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

FRONTIER = {  # directory -> label, in the order of the table
    "all_tensor": "one block per tensor",
    "graph": "graph plan (default)",
    "norm_element": "graph, norm scales per element",
    "embed_element": "graph, embedding tables per element",
    "head_element": "graph, output head per element",
    "attn_element": "graph, attention per element",
    "mlp_element": "graph, MLP per element",
    "all_element": "AdamMini, every tensor per element",
    "adamw": "AdamW",
}


def runs_under(root: Path) -> list[dict[str, Any]]:
    """Every finished run's metrics.json under ``root`` (interrupted runs left out)."""
    runs = []
    for path in sorted(root.rglob("metrics.json")):
        run = json.loads(path.read_text())
        if not run.get("interrupted"):
            run["path"] = str(path.parent)
            runs.append(run)
    return runs


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: Sequence[float], digits: int = 4) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def best_lr(root: Path, optimizer: str, model: str) -> float:
    candidates = [
        r
        for r in runs_under(root)
        if r["choices"]["optimizer"] == optimizer and r["choices"]["model"] == model
    ]
    finite = [r for r in candidates if math.isfinite(r["final_val_loss"])]
    if not finite:
        raise SystemExit(f"no finished {optimizer} run on {model} under {root}")
    return min(finite, key=lambda r: r["final_val_loss"])["lr"]


def by_key(runs: Iterable[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[tuple(_field(run, k) for k in keys)].append(run)
    return groups


def _field(run: dict[str, Any], key: str) -> Any:
    if key == "steps":
        return run["steps"]
    if key == "plan":
        return Path(run["path"]).parent.name
    return run["choices"][key] if key in run["choices"] else run[key]


def tuning_table(runs: list[dict[str, Any]]) -> list[str]:
    lrs = sorted({r["lr"] for r in runs})
    lines = [
        "| optimizer | model | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen |",
        "|---|---|" + "---:|" * len(lrs) + "---|",
    ]
    for (opt, model), members in sorted(by_key(runs, "optimizer", "model").items()):
        val = {r["lr"]: r["final_val_loss"] for r in members}
        chosen = min(val, key=lambda lr: val[lr] if math.isfinite(val[lr]) else math.inf)
        cells = [f"{val[lr]:.4f}" if lr in val else "-" for lr in lrs]
        lines.append(f"| {opt} | {model} | " + " | ".join(cells) + f" | {chosen:g} |")
    return lines


def gap_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (layout, model, steps): both optimizers' test losses and the per-seed differences."""
    cells = by_key(runs, "model", "steps", "optimizer", "seed")
    size = {r["choices"]["model"]: r["num_params"] for r in runs}
    rows = []
    for layout in sorted({m.split("_")[0] for m in size}):
        for model in sorted((m for m in size if m.split("_")[0] == layout), key=size.__getitem__):
            for steps in sorted({r["steps"] for r in runs}):
                seeds = sorted(
                    s for (m, st, o, s) in cells if m == model and st == steps and o == "adam_mini"
                )
                loss = {
                    opt: [
                        cells[(model, steps, opt, s)][0]["final_test_loss"]
                        for s in seeds
                        if (model, steps, opt, s) in cells
                    ]
                    for opt in ("adam_mini", "adamw")
                }
                paired = [
                    cells[(model, steps, "adam_mini", s)][0]["final_test_loss"]
                    - cells[(model, steps, "adamw", s)][0]["final_test_loss"]
                    for s in seeds
                    if (model, steps, "adamw", s) in cells
                ]
                if not paired:
                    continue
                params = cells[(model, steps, "adam_mini", seeds[0])][0]["num_params"]
                rows.append(dict(layout=layout, model=model, params=params, steps=steps, gap=paired, **loss))
    return rows


def gap_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| layout | model | params | steps | Adam-mini test loss | AdamW test loss | gap (Adam-mini - AdamW) | seeds Adam-mini ahead |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ahead = sum(g < 0 for g in r["gap"])
        lines.append(
            f"| {r['layout']} | {r['model']} | {r['params'] / 1e6:.2f}M | {r['steps']} | "
            f"{fmt(r['adam_mini'])} | {fmt(r['adamw'])} | {fmt(r['gap'])} | {ahead}/{len(r['gap'])} |"
        )
    return lines


def frontier_points(study: Path, layout: str, model: str) -> list[dict[str, Any]]:
    """(plan, second-moment values, test losses) of ``layout``'s frontier plans, with the graph
    plan and AdamW from the sweep's 400-step runs of ``model``."""
    points: dict[str, dict[str, Any]] = {}

    def add(plan: str, run: dict[str, Any]) -> None:
        point = points.setdefault(plan, {"v": run["second_moment_values"], "loss": [], "by_seed": {}})
        point["loss"].append(run["final_test_loss"])
        point["by_seed"][run["seed"]] = run["final_test_loss"]

    for run in runs_under(study / "frontier" / layout):
        add(_field(run, "plan"), run)
    for run in runs_under(study / "sweep"):
        if run["choices"]["model"] == model and run["steps"] == 400:
            add("graph" if run["choices"]["optimizer"] == "adam_mini" else "adamw", run)
    return [dict(plan=k, label=FRONTIER[k], **points[k]) for k in FRONTIER if k in points]


def frontier_table(points: list[dict[str, Any]]) -> list[str]:
    """Each plan's test loss, and its difference to the graph plan's on the same seeds."""
    graph = next((p["by_seed"] for p in points if p["plan"] == "graph"), {})
    lines = [
        "| plan | second-moment values | test loss | seeds | minus graph plan, same seeds |",
        "|---|---:|---:|---:|---:|",
    ]
    for p in points:
        paired = [loss - graph[s] for s, loss in sorted(p["by_seed"].items()) if s in graph]
        vs = "-" if p["plan"] == "graph" else fmt(paired)
        lines.append(f"| {p['label']} | {p['v']:,} | {fmt(p['loss'])} | {len(p['loss'])} | {vs} |")
    return lines


def official_table(study: Path) -> list[str]:
    """Official package vs ours (name plan, graph plan) on llama_tiny, per seed."""
    ours = {
        r["seed"]: r
        for r in runs_under(study / "sweep")
        if r["choices"]["model"] == "llama_tiny"
        and r["steps"] == 400
        and r["choices"]["optimizer"] == "adam_mini"
    }
    official = {r["seed"]: r for r in runs_under(study / "official" / "official")}
    names = {r["seed"]: r for r in runs_under(study / "official" / "names")}
    lines = [
        "| seed | official val / test | ours, name plan val / test | ours, graph plan val / test | max abs train-loss diff, steps 1-50 (official vs ours names / graph) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for seed in sorted(official):
        o = official[seed]
        cells = [f"{o['final_val_loss']:.4f} / {o['final_test_loss']:.4f}"]
        diffs = []
        for other in (names.get(seed), ours.get(seed)):
            if other is None:
                cells.append("-")
                diffs.append("-")
                continue
            cells.append(f"{other['final_val_loss']:.4f} / {other['final_test_loss']:.4f}")
            first = [
                abs(a - b)
                for (sa, a), (sb, b) in zip(o["train_curve"], other["train_curve"])
                if sa <= 50 and sa == sb
            ]
            diffs.append(f"{max(first):.1e}" if first else "-")
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {' / '.join(diffs)} |")
    return lines


def plot_gap(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, layout in enumerate(sorted({r["layout"] for r in rows})):
        for j, steps in enumerate(sorted({r["steps"] for r in rows})):
            sel = [r for r in rows if r["layout"] == layout and r["steps"] == steps]
            if not sel:
                continue
            x = [r["params"] for r in sel]
            y = [mean_std(r["gap"])[0] for r in sel]
            err = [mean_std(r["gap"])[1] for r in sel]
            ax.errorbar(
                x,
                y,
                yerr=err,
                marker="os"[i],
                linestyle="-" if j else "--",
                capsize=3,
                label=f"{layout}, {steps} steps",
            )
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("test loss: Adam-mini - AdamW (mean ± std, 3 seeds)")
    ax.set_title("Gap to AdamW, each at its own tuned lr (below 0: Adam-mini ahead)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_frontier(panels: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(p["label"] for points in panels.values() for p in points))
    colour = {label: f"C{i % 10}" for i, label in enumerate(labels)}  # one colour a layout, every panel
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (model, points) in zip(axes[0], panels.items()):
        for p in points:
            mean, std = mean_std(p["loss"])
            ax.errorbar(
                [p["v"]],
                [mean],
                yerr=[std],
                marker="o",
                capsize=3,
                color=colour[p["label"]],
                label=p["label"],
            )
        ax.set_xscale("log")
        ax.set_xlabel("second-moment values kept")
        ax.set_ylabel("test loss (mean ± std over seeds)")
        ax.set_title(f"{model}, 400 steps")
        ax.legend(fontsize=7)
    fig.suptitle("Memory-quality frontier: block granularity against loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(study: Path, docs: Path) -> str:
    docs.mkdir(parents=True, exist_ok=True)
    sweep = runs_under(study / "sweep")
    rows = gap_rows(sweep)
    frontiers = {
        model: points
        for layout, model in (("gpt", "gpt_tiny"), ("llama", "llama_tiny"))
        if (points := frontier_points(study, layout, model))
    }
    frontier_lines = []
    for model, points in frontiers.items():
        frontier_lines += [
            f"### Memory-quality frontier ({model}, 400 steps)",
            "",
            *frontier_table(points),
            "",
        ]
    text = "\n".join(
        [
            f"Study directory: `{study}` (`bash benchmarks/quality_study.sh`). Test-split losses.",
            "",
            "### lr tuning (validation loss, seed 0, 400 steps)",
            "",
            *tuning_table(runs_under(study / "tune")),
            "",
            "### Official Adam-mini v1.1.1 vs ours (llama_tiny, 400 steps)",
            "",
            *official_table(study),
            "",
            "### Gap to AdamW by size and length",
            "",
            *gap_table(rows),
            "",
            *frontier_lines,
        ]
    )
    (docs / "quality.md").write_text(text)
    if rows:
        plot_gap(rows, docs / "gap.png")
    if frontiers:
        plot_frontier(frontiers, docs / "frontier.png")
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lr = sub.add_parser("best-lr", help="the lr with the lowest validation loss")
    lr.add_argument("root", type=Path)
    lr.add_argument("--optimizer", required=True)
    lr.add_argument("--model", required=True)
    rep = sub.add_parser("report", help="tables and plots of a finished study")
    rep.add_argument("study", type=Path)
    rep.add_argument("--docs", type=Path, default=Path("docs/quality"))
    args = parser.parse_args(argv)
    if args.command == "best-lr":
        print(f"{best_lr(args.root, args.optimizer, args.model):g}")
    else:
        print(report(args.study, args.docs))


if __name__ == "__main__":
    main()
