"""Llama-2-70B-shaped model on meta: auto_partition within budget (slow: run with -m slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "budget_s"), [([], 10.0), (["--no-collapse"], 12.0)])
def test_llama70b_trace_budget(flags, budget_s):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's partitioners, not an installed one
    script = ROOT / "benchmarks" / "trace_llama70b.py"
    out = subprocess.run(
        [sys.executable, str(script), *flags], capture_output=True, text=True, check=True, env=env
    ).stdout
    seconds = float(next(l for l in out.splitlines() if l.startswith("auto_partition:")).split()[1])
    rss = float(next(l for l in out.splitlines() if l.startswith("peak RSS:")).split()[2])
    assert "['export']" in out
    assert seconds <= budget_s and rss <= 1.5, out
