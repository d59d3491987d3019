"""One ``torch.compile`` entry per optimizer, so that optimizers never share Dynamo's cache.

Dynamo keeps its compiled graphs (and its recompile limit, 8 by default) per *code object*. A
plain ``torch.compile(adam_mini)`` in every optimizer would share one cache: each new model
structure adds an entry, and the ninth structure in one process (a Hydra multirun, a notebook,
a test session) hits the limit, which ``fullgraph=True`` turns into a hard error. A copy of the
function with its own code object gives each optimizer its own cache; within one optimizer the
structure is fixed, so it compiles once per param group and never again.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

_serial = itertools.count()


def own_code_copy(fn: F) -> F:
    """A copy of ``fn`` with a new code object (same globals, defaults and behaviour)."""
    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_{next(_serial)}")
    copy = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__doc__ = fn.__doc__
    copy.__qualname__ = fn.__qualname__
    copy.__module__ = fn.__module__
    return copy  # type: ignore[return-value]


# Below this many parameters, ``compile="auto"`` stays eager: compiling costs ~10-20 s once per
# process (less with Inductor's on-disk cache warm), and the compiled step saves ~25% of the eager
# step's time, so a short run of a small model would lose more than it gains.
AUTO_COMPILE_MIN_PARAMS = 100_000_000


def can_compile(devices: set[torch.device]) -> bool:
    """Whether Inductor can build the step here: a C++ compiler for CPU, Triton for CUDA."""
    for device in devices:
        if device.type == "cuda":
            from torch.utils._triton import has_triton

            if not has_triton():
                return False
        elif device.type == "cpu":
            from torch._inductor.cpp_builder import get_cpp_compiler

            try:
                get_cpp_compiler()
            except Exception:  # any failure to find one means "no"
                return False
        else:
            return False
    return True


def resolve_compile(compile: bool | str, params: list[torch.Tensor]) -> bool:
    """``compile`` as a bool: ``"auto"`` compiles large models where Inductor can build the step."""
    if compile != "auto":
        return bool(compile)
    numel = sum(p.numel() for p in params)
    return numel >= AUTO_COMPILE_MIN_PARAMS and can_compile({p.device for p in params})


def compile_private(fn: F) -> F:
    """``torch.compile(fn, fullgraph=True)`` with a Dynamo cache of its own."""
    return torch.compile(own_code_copy(fn), fullgraph=True)  # type: ignore[return-value]
