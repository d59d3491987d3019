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


def compile_private(fn: F) -> F:
    """``torch.compile(fn, fullgraph=True)`` with a Dynamo cache of its own."""
    return torch.compile(own_code_copy(fn), fullgraph=True)  # type: ignore[return-value]
