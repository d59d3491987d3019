"""`import lightning_adam_mini` stays a library import: no Lightning, Hydra or OmegaConf until used."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import lightning_adam_mini
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"lightning", "pytorch_lightning", "hydra", "omegaconf"})
print(",".join(heavy))
lightning_adam_mini.AdamMiniCallback  # the adapters load on first use
print("lightning" in sys.modules)
"""


def test_import_loads_no_framework_until_an_adapter_is_used():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    before, after = out.stdout.splitlines()
    assert before == ""
    assert after == "True"
