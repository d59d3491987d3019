"""Peak temporary memory of one optimizer step: bytes the step allocates beyond its state.

Each optimizer steps once to create its state (and compile), then once more while the peak is
measured: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak resident set (``VmHWM``,
reset through ``/proc/self/clear_refs``), with glibc told to map every allocation of 64 KiB or
more on its own (``MALLOC_MMAP_THRESHOLD_``) so that a freed temporary really leaves the process
and a new one shows up in the peak. Full-size temporaries show as a multiple of parameter bytes.

    python benchmarks/step_memory.py                  # ~32M fp32 params, CPU
    python benchmarks/step_memory.py --dtype bfloat16
    python benchmarks/step_memory.py --dim 1024 --layers 12 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:  # before torch allocates anything
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})

import torch
from contenders import add_model_args, contenders, machine_line, model_from_args


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_step_bytes(opt: torch.optim.Optimizer, device: torch.device) -> int:
    """Peak bytes held during one ``opt.step()`` above what was held before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        opt.step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    opt.step()
    return (_status_kib("VmHWM") - before) * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    args = ap.parse_args()
    base, cfg, device = model_from_args(args)
    param_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    grads = [torch.randn_like(p) * 1e-3 for p in base.parameters()]
    print(machine_line(base, cfg, device))
    print()
    print("| optimizer | peak step temporaries, MB | / parameter bytes |")
    print("|---|---:|---:|")
    for name, make in contenders(base, cfg).items():
        model = copy.deepcopy(base)
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        opt = make(model)
        opt.step()  # state (and compilation) outside the measurement
        peak = peak_step_bytes(opt, device)
        print(f"| {name} | {peak / 2**20:.1f} | {peak / param_bytes:.3f} |")
        del opt, model


if __name__ == "__main__":
    main()
