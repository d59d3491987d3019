"""lam-compare and the end-of-sweep hook with a diverged run and bad metrics files (defect 7)."""

from __future__ import annotations

import csv
import json
import logging
import math

from omegaconf import OmegaConf

from lightning_adam_mini.app import compare


def _run(root, name, optimizer, seed, loss, **extra):
    d = root / name
    d.mkdir(parents=True)
    metrics = {
        "seed": seed,
        "overrides": [f"optimizer={optimizer}", f"seed={seed}"],
        "final_val_loss": loss,
        "tokens_per_s": 1000.0,
        "peak_memory_bytes": 2**20,
        "optimizer_state_bytes": 2**20,
        "state_vs_adamw": 0.5,
        "train_curve": [[1, 3.0], [2, loss]],
        "val_curve": [[2, loss]],
        **extra,
    }
    (d / "metrics.json").write_text(json.dumps(metrics))  # NaN is written as NaN, as lam-train does
    return d / "metrics.json"


def _sweep(tmp_path):
    root = tmp_path / "sweep"
    _run(root, "0", "a", 0, 1.0)
    _run(root, "1", "a", 1, math.nan)  # diverged
    _run(root, "2", "b", 0, math.nan)  # diverged, the only run of its setting
    _run(root, "3", "b", 1, math.inf)
    (root / "4").mkdir()
    (root / "4" / "metrics.json").write_text('{"final_val_loss": 1.0, "overr')  # cut short
    (root / "5").mkdir()
    (root / "5" / "metrics.json").write_bytes(b"\xff\xfe\x00")  # not text
    _run(root, "6", "a", 2, 1.5, interrupted=True)  # stopped by SIGTERM
    partial = _run(root, "7", "a", 3, 1.0)
    partial.write_text(json.dumps({"final_val_loss": 1.0, "overrides": []}))
    return root


def test_diverged_runs_are_reported_and_bad_files_named_and_skipped(tmp_path, caplog):
    root = _sweep(tmp_path)
    with caplog.at_level(logging.WARNING):
        table, png = compare.compare(root)
    for bad in ("4", "5", "6", "7"):
        assert str(root / bad / "metrics.json") in caplog.text
    assert "interrupted" in caplog.text and "partial" in caplog.text
    assert "| optimizer=a | 2 | 1.0000 (1 diverged) |" in table
    assert "| optimizer=b | 2 | diverged |" in table
    assert png.stat().st_size > 0
    with open(root / "summary.csv") as f:
        rows = {r["setting"]: r for r in csv.DictReader(f)}
    assert rows["optimizer=a"]["diverged"] == "1" and rows["optimizer=b"]["diverged"] == "2"


def test_sweep_end_hook_writes_the_summary_despite_bad_runs(tmp_path):
    root = _sweep(tmp_path)
    compare.CompareRunsAtSweepEnd().on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(root)}}})
    )
    assert "diverged" in (root / "summary.md").read_text()


def test_sweep_end_hook_logs_instead_of_raising_when_nothing_is_usable(tmp_path, caplog):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "metrics.json").write_text("{")
    with caplog.at_level(logging.ERROR):
        compare.CompareRunsAtSweepEnd().on_multirun_end(
            OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
        )
    assert "no sweep summary" in caplog.text and not (tmp_path / "summary.md").exists()


def test_lam_compare_says_where_it_wrote(tmp_path, capsys):
    _run(tmp_path / "runs", "0", "a", 0, 1.0)
    compare.main([str(tmp_path / "runs"), "--out", str(tmp_path / "new" / "dir")])
    out = capsys.readouterr().out
    assert f"wrote {(tmp_path / 'new' / 'dir' / 'summary.md').resolve()}" in out
