"""Multirun + lam-compare: the summary table (mean ± std over seeds) and the combined plot."""

from __future__ import annotations

import csv
import json

import pytest

from lightning_adam_mini.app import compare

from .conftest import run_lam_train


def _fake_run(root, name, optimizer, seed, loss):
    d = root / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(
        json.dumps(
            {
                "label": optimizer,
                "seed": seed,
                "overrides": [f"optimizer={optimizer}", f"seed={seed}", "x=1"],
                "final_val_loss": loss,
                "tokens_per_s": 1000.0 + seed,
                "peak_memory_bytes": 2**20,
                "optimizer_state_bytes": 2**20,
                "state_vs_adamw": 0.5,
                "train_curve": [[1, 3.0], [2, loss]],
                "val_curve": [[2, loss]],
            }
        )
    )


def test_summary_groups_seeds_and_labels_by_what_varies(tmp_path):
    for i, (opt, seed, loss) in enumerate([("a", 0, 1.0), ("a", 1, 1.2), ("b", 0, 2.0), ("b", 1, 2.0)]):
        _fake_run(tmp_path, str(i), opt, seed, loss)
    runs = compare.load_runs(tmp_path)
    assert {r["label"] for r in runs} == {"optimizer=a", "optimizer=b"}  # x=1 is shared, seed dropped
    rows = {r["setting"]: r for r in compare.summarize(runs)}
    mean, std = rows["optimizer=a"]["final_val_loss"]
    assert mean == pytest.approx(1.1) and std == pytest.approx(0.141421, rel=1e-4)
    assert rows["optimizer=b"]["final_val_loss"] == (2.0, 0.0) and rows["optimizer=b"]["seeds"] == [0, 1]
    table = compare.markdown_table(list(rows.values()))
    assert "| optimizer=a | 2 | 1.1000 ± 0.1414 |" in table


def test_lam_compare_cli(tmp_path, capsys):
    for i, (opt, seed) in enumerate([("a", 0), ("b", 0)]):
        _fake_run(tmp_path / "sweep", str(i), opt, seed, 1.0 + i)
    compare.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")])
    assert "optimizer=b" in capsys.readouterr().out
    assert (tmp_path / "out" / "compare.png").stat().st_size > 0
    with open(tmp_path / "out" / "summary.csv") as f:
        assert [r["setting"] for r in csv.DictReader(f)] == ["optimizer=a", "optimizer=b"]
    with pytest.raises(FileNotFoundError, match="no usable metrics.json"):
        compare.compare(tmp_path / "empty")


def test_multirun_then_compare(tmp_path, tiny):
    sweep = tmp_path / "sweep"
    proc = run_lam_train(
        [
            "-m",
            "optimizer=adam_mini,adamw",
            "seed=0,1",
            *tiny,
            "trainer.max_steps=3",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert len(list(sweep.glob("*/metrics.json"))) == 4
    # the end-of-sweep hook already wrote the comparison
    text = (sweep / "summary.md").read_text()
    assert "| optimizer=adam_mini | 2 |" in text and "| optimizer=adamw | 2 |" in text
    assert "±" in text and (sweep / "compare.png").stat().st_size > 0
    # and lam-compare gives the same table from the directory alone
    table, _ = compare.compare(sweep, tmp_path / "again")
    assert table in text
