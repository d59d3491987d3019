"""The one-pass row kernel (``csrc/row_step.cpp``): built on first use, cached, optional.

Adam-mini needs a block's mean of ``g**2`` before it can update the block. A foreach step reads
``g`` twice (the reduction, then the update: 6 memory streams per element); this kernel reduces
each row and updates it while the row is still in cache (5 streams: read ``p, g, m``, write
``p, m``), against fused AdamW's 7. It serves parameters whose blocks are runs of whole rows
along dim 0 (embeddings, output heads, linear layers per output neuron, attention heads, whole
tensors) with fp32 ``p`` and ``g`` and an fp32 or bf16 ``m`` on CPU; everything else takes the
foreach path. One call updates all such parameters of a step (and counts their steps): the rows
of all of them are split evenly over the threads, so a model of many small tensors costs one
call and one parallel region, not one per tensor.

Nothing is needed at install: the C++ source is compiled with ``torch.utils.cpp_extension.load``
the first time it is used (15-60 s; cached in ``~/.cache/torch_extensions`` for later
runs). Without a working compiler the optimizer warns once and runs the foreach path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch

# Below this many parameters ``fused="auto"`` keeps the foreach path: not worth a first-time build.
AUTO_FUSED_MIN_PARAMS = 10_000_000

# (p, g, m, v, steps, rows, lr, beta1, beta2, eps, weight_decay): lists with one entry per
# parameter (``rows``: its number of blocks; ``weight_decay``: 0.0 where it is not decayed);
# ``lr`` a one-element tensor.
RowStep = Callable[..., None]
_SOURCE = Path(__file__).parent / "csrc" / "row_step.cpp"
_loaded: list[RowStep | None] = []  # [] until the first attempt, then [op] or [None]


def row_step_op() -> RowStep | None:
    """``torch.ops.lightning_adam_mini.row_step_``, building it on first call; None if it can't be."""
    if not _loaded:
        try:
            from torch.utils.cpp_extension import load

            load(
                name="lightning_adam_mini_row_step",
                sources=[str(_SOURCE)],
                extra_cflags=["-O3", "-march=native", "-fopenmp"],
                is_python_module=False,
            )
            torch.library.register_fake("lightning_adam_mini::row_step_")(_row_step_fake)
            _loaded.append(torch.ops.lightning_adam_mini.row_step_)
        except Exception as error:  # no compiler, no ninja, a failed build: run without it
            warnings.warn(
                f"AdamMini: the one-pass row kernel could not be built ({type(error).__name__}: "
                f"{str(error)[:200]}); using the foreach step (slower, same result)",
                stacklevel=3,
            )
            _loaded.append(None)
    return _loaded[0]


def _row_step_fake(*args: object) -> None:
    """What the kernel does to shapes, for ``torch.compile``'s tracing: nothing; it only updates
    its inputs in place, as its schema declares. (torch 2.13 also traces an op that returns
    nothing without one; registered so that this does not depend on that inference.)"""
    return None


def resolve_fused(fused: bool | str, params: list[torch.Tensor], compiled: bool) -> RowStep | None:
    """The kernel to use, or None: ``"auto"`` uses it for CPU models of 10M+ parameters that are
    not compiled (compiled, Inductor's code runs instead); ``True`` requires it, compiled or not
    (``RuntimeError`` if it cannot be built)."""
    if fused is False or (fused == "auto" and compiled):
        return None
    if fused == "auto":
        cpu = [p for p in params if p.device.type == "cpu"]
        if sum(p.numel() for p in cpu) < AUTO_FUSED_MIN_PARAMS:
            return None
        return row_step_op()
    op = row_step_op()
    if op is None:
        raise RuntimeError(
            "AdamMini(fused=True): the one-pass row kernel could not be built here (see the warning "
            "above); install a C++ compiler and ninja, or use fused='auto'"
        )
    return op
