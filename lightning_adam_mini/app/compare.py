"""``lam-compare RUN_DIR``: one table and one plot for every run found under RUN_DIR.

Runs are the ``metrics.json`` files that ``lam-train`` writes (a multirun's job directories, or
any tree of runs). Runs that differ only in ``seed`` form one setting; the table gives each
setting's mean ± std over seeds. Written into RUN_DIR (or ``--out``): ``summary.md``,
``summary.csv`` and ``compare.png``. A multirun calls this itself when the sweep ends
(:class:`CompareRunsAtSweepEnd`, configured in ``configs/hydra/default.yaml``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..stats import MiB
from .plot import plot_loss_curves

log = logging.getLogger(__name__)

#: (column, metrics.json key, scale, format)
COLUMNS = (
    ("final val loss", "final_val_loss", 1.0, "{:.4f}"),
    ("final test loss", "final_test_loss", 1.0, "{:.4f}"),  # only runs with data.test_fraction > 0
    ("tokens/s", "tokens_per_s", 1.0, "{:,.0f}"),
    ("peak memory (MiB)", "peak_memory_bytes", 1 / MiB, "{:,.1f}"),
    ("optimizer state (MiB)", "optimizer_state_bytes", 1 / MiB, "{:.3f}"),
    ("state vs AdamW", "state_vs_adamw", 100.0, "{:.1f}%"),
)
#: columns a run may lack (written only by some runs); the table leaves them out when no run has one
OPTIONAL = ("final_test_loss",)
#: what a finished run's metrics.json must hold to be compared
REQUIRED = ("overrides", "train_curve", "val_curve", *(k for _, k, _, _ in COLUMNS if k not in OPTIONAL))


def read_run(path: Path) -> dict[str, Any] | None:
    """One run's metrics, or None (logged, naming the file and why) for a file that is not a
    finished run: unreadable, partial, or from a run stopped by SIGTERM."""
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        log.warning("skipping %s: not a readable metrics.json (%s)", path, err)
        return None
    missing = [key for key in REQUIRED if key not in run] if isinstance(run, dict) else ["everything"]
    if missing:
        log.warning("skipping %s: partial metrics.json, no %s", path, missing)
        return None
    if run.get("interrupted"):
        log.warning("skipping %s: the run was interrupted (resume it with lam-train ckpt_path=...)", path)
        return None
    return run


def load_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every finished run's metrics under ``root``, labelled by the settings that vary between
    runs. Files that are not finished runs are named in a warning and skipped."""
    root = Path(root)
    files = sorted(root.rglob("metrics.json"))
    read = [(run, f) for f in files if (run := read_run(f)) is not None]
    if not read:
        raise FileNotFoundError(
            f"no usable metrics.json under {root} ({len(files)} found): point lam-compare at a "
            "lam-train run or sweep dir"
        )
    runs, files = [r for r, _ in read], [f for _, f in read]
    overridden = sorted({k for r in runs for k in _overrides(r)})
    settings = [{k: _value(r, f.parent, k) for k in overridden} for r, f in zip(runs, files)]
    varying = [k for k in overridden if len({s[k] for s in settings}) > 1]
    for run, setting in zip(runs, settings):
        if varying:
            run["label"] = " ".join(f"{k}={setting[k]}" for k in varying)
        else:
            run.setdefault("label", "run")  # lam-train writes one; a hand-made file may not
    return runs


def _overrides(run: dict[str, Any]) -> dict[str, str]:
    """The run's command-line overrides (key -> value) without the seed."""
    pairs = (o.split("=", 1) for o in run.get("overrides", []) if "=" in o)
    return {k.lstrip("+~"): v for k, v in pairs if k.lstrip("+~") != "seed"}


def _value(run: dict[str, Any], run_dir: Path, key: str) -> str:
    """``key``'s value in this run: its override, else its config group choice, else the value in
    the run's saved config (``.hydra/config.yaml``), so runs of different sweeps compare."""
    given = _overrides(run)
    if key in given:
        return _normal(given[key])
    if key in run.get("choices", {}):
        return str(run["choices"][key])
    saved = run_dir / ".hydra" / "config.yaml"
    if saved.is_file():
        return _normal(str(OmegaConf.select(OmegaConf.load(saved), key, default=None)))
    return "?"


def _normal(text: str) -> str:
    """'3e-3' and '0.003' are the same value."""
    try:
        return repr(float(text)) if any(c in text for c in ".eE") else text
    except ValueError:
        return text


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and std of the finite values (NaN when none is finite)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per label: n runs, seeds, and (mean, std) of each column's metric."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[run["label"]].append(run)
    rows = []
    for label, members in groups.items():
        row: dict[str, Any] = {
            "setting": label,
            "n": len(members),
            "seeds": sorted(m["seed"] for m in members if m.get("seed") is not None),
            # a non-finite final loss: the run diverged; the loss column averages the others
            "diverged": sum(not math.isfinite(m["final_val_loss"]) for m in members),
        }
        for _, key, scale, _ in COLUMNS:
            row[key] = _mean_std([m.get(key, math.nan) * scale for m in members])
        rows.append(row)
    return rows


def _shown_columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, float, str]]:
    """The columns, less the optional ones that no row has a value for."""
    return [c for c in COLUMNS if c[1] not in OPTIONAL or any(math.isfinite(r[c[1]][0]) for r in rows)]


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = _shown_columns(rows)
    header = ["setting", "runs", *(c[0] for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["setting"], str(row["n"])]
        for _, key, _, fmt in columns:
            mean, std = row[key]
            finite = row["n"] - (row["diverged"] if key == "final_val_loss" else 0)
            cell = fmt.format(mean) + (f" ± {fmt.format(std)}" if finite > 1 else "")
            if key == "final_val_loss" and row["diverged"]:
                cell = "diverged" if not finite else f"{cell} ({row['diverged']} diverged)"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(root: str | Path, out: str | Path | None = None) -> tuple[str, Path]:
    """Write summary.md, summary.csv and compare.png for the runs under ``root``; return the table."""
    runs = load_runs(root)
    rows = summarize(runs)
    out = Path(out or root)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    (out / "summary.md").write_text(f"Runs under `{root}` (mean ± std over seeds)\n\n{table}\n")
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "setting",
                "runs",
                "diverged",
                "seeds",
                *(f"{k}_{s}" for _, k, _, _ in COLUMNS for s in ("mean", "std")),
            ]
        )
        for row in rows:
            writer.writerow(
                [
                    row["setting"],
                    row["n"],
                    row["diverged"],
                    " ".join(map(str, row["seeds"])),
                    *(v for _, k, _, _ in COLUMNS for v in row[k]),
                ]
            )
    png = plot_loss_curves(runs, out / "compare.png", title=f"{len(runs)} runs")
    return table, png


class CompareRunsAtSweepEnd(Callback):
    """Hydra callback: at the end of a multirun, ``compare`` the sweep directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not any(sweep_dir.rglob("metrics.json")):
            return
        try:
            table, png = compare(sweep_dir)
        except (OSError, ValueError) as err:  # never lose the sweep's runs over their summary
            log.error("no sweep summary for %s: %s", sweep_dir, err)
            return
        log.info("sweep summary (%s):\n%s\nplot: %s", sweep_dir / "summary.md", table, png)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lam-compare", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("run_dir", help="a lam-train run or multirun directory (searched recursively)")
    parser.add_argument("--out", help="where to write summary.md/.csv and compare.png (default: RUN_DIR)")
    args = parser.parse_args(argv)
    try:
        table, png = compare(args.run_dir, args.out)
    except FileNotFoundError as err:
        parser.error(str(err))
    print(table)
    out = Path(args.out or args.run_dir).resolve()
    print(f"\nwrote {out / 'summary.md'}, {out / 'summary.csv'} and {png.resolve()}")


if __name__ == "__main__":
    main()
