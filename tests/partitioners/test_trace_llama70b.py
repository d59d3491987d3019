"""Llama-2-70B-shaped model on meta: auto_partition within budget (slow: run with -m slow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_llama70b_trace_budget():
    script = Path(__file__).parents[2] / "benchmarks" / "trace_llama70b.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    seconds = float(next(l for l in out.splitlines() if l.startswith("auto_partition:")).split()[1])
    rss = float(next(l for l in out.splitlines() if l.startswith("peak RSS:")).split()[2])
    assert "['export']" in out
    assert seconds <= 10 and rss <= 1.5, out
