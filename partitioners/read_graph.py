"""The graph pass of ``auto_partition``, contained: no failure escapes, and one failing submodule
costs only its own parameters.

The whole model is traced first (:func:`~partitioners.trace.trace`, which follows data-dependent
code at its upper bound when it must). If that fails (a value with no upper bound, a forward that
raises), a meta copy of the model is run eagerly with a forward pre-hook on every submodule,
which records the inputs that reached it. Each child that was reached is then traced on its own
with those inputs; a child that fails again is split into its children, and so on. What still
can't be read is left to the fallbacks, and every module that failed is reported with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .graph_roles import graph_decisions
from .plan import Decision
from .trace import TraceError, meta_copy, meta_inputs, trace
from .upper_bounds import UpperBounds, example_values


@dataclass
class GraphPass:
    """Decisions read from the graph, by the user model's parameter names."""

    #: name -> (decision or ``None`` when the graph can't explain the use, method)
    decisions: dict[str, tuple[Decision | None, str]] = field(default_factory=dict)
    #: projections feeding a query or key whose heads could not be read
    heads_unread: set[str] = field(default_factory=set)
    #: "module: reason" for every module (``<model>`` for the whole) that could not be traced
    failures: list[str] = field(default_factory=list)


def _reason(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if isinstance(err, TraceError):  # one line per tracer and input dtype tried
        return "; ".join(line[:160] for line in lines[1:])
    return f"{type(err).__name__}: {(lines or [''])[0][:200]}"


def _read(module: nn.Module, prefix: str, args: tuple, kwargs: dict, collapse: bool, into: GraphPass) -> None:
    """Trace ``module`` alone and record its parameters' decisions (raises if it can't)."""
    traced = trace(module, args, kwargs, collapse)
    reading = graph_decisions(traced.graph, traced.params, traced.shapes, whole_model=not prefix)
    method = traced.decided_by if not prefix else f"{traced.decided_by} ({prefix.rstrip('.')})"
    for name, _ in module.named_parameters():
        key = traced.rename(name)
        if key in reading.decisions:
            into.decisions.setdefault(prefix + name, (reading.decisions[key], method))
        if key in reading.heads_unread:
            into.heads_unread.add(prefix + name)


class _Stand_in:
    """Wraps a submodule's forward for the meta run: if it raises, its output is taken to be a
    tensor shaped like its first input (a block, an MoE layer, a residual branch), so that the
    run goes on to the modules after it; a wrong guess fails the parent, which then stands in."""

    def __init__(self, forward: Any):
        self.forward = forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.forward(*args, **kwargs)
        except Exception:
            first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
            if first is None:
                raise
            return torch.empty_like(first)


def capture_inputs(model: nn.Module, args: tuple, kwargs: dict) -> dict[str, tuple[tuple, dict]]:
    """The inputs that reached each submodule in a meta run of ``model``.

    The run takes data-dependent code at its upper bound (:class:`~.upper_bounds.UpperBounds`),
    so that it goes on past a boolean mask or an expert loop to the modules after it. Inputs
    given as shapes are token ids or floats: the run that reached more modules is kept.
    """
    copy_ = meta_copy(model).eval()
    runs: list[dict[str, tuple[tuple, dict]]] = []

    def hook(name: str):
        def record(_module: nn.Module, a: tuple, k: dict) -> None:
            runs[-1].setdefault(name, (a, k))

        return record

    modules = [(n, m) for n, m in copy_.named_modules() if n]
    for _, module in modules:
        module.forward = _Stand_in(module.forward)
    handles = [m.register_forward_pre_hook(hook(n), with_kwargs=True) for n, m in modules]
    dtype = next((p.dtype for p in copy_.parameters()), torch.float32)
    for input_dtype in (torch.long, dtype):
        runs.append({})
        meta_args, meta_kwargs = meta_inputs(args, input_dtype), meta_inputs(kwargs, input_dtype)
        leaves = pytree.tree_leaves((meta_args, meta_kwargs))
        try:
            with torch.no_grad(), UpperBounds() as mode:
                for i, values in example_values((args, kwargs), (meta_args, meta_kwargs)):
                    mode.know(leaves[i], values)
                copy_(*meta_args, **meta_kwargs)
        except Exception:  # the forward failed outside every submodule: keep what was recorded
            continue
        if input_dtype == torch.long and len(runs[0]) == len(modules):
            break  # token ids reached everything
    for handle in handles:
        handle.remove()
    return max(reversed(runs), key=len)  # a tie: the parameter dtype's run


def _read_children(
    module: nn.Module, prefix: str, captured: dict[str, tuple[tuple, dict]], collapse: bool, into: GraphPass
) -> None:
    for name, child in module.named_children():
        path = prefix + name
        if next(child.parameters(), None) is None:
            continue
        if path in captured:
            try:
                _read(child, path + ".", *captured[path], collapse, into)
                continue
            except Exception as err:
                into.failures.append(f"{path}: {_reason(err)}")
        _read_children(child, path + ".", captured, collapse, into)


@contextmanager
def _any_kernels() -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` off for the block, then restored as it was.

    With it on (``Trainer(deterministic=True)`` leaves it on), some ops trace to other
    decompositions (a bilinear ``interpolate`` of a position table among them); the partition
    must not depend on a flag that only chooses kernels.
    """
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def graph_pass(
    model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None, collapse: bool
) -> GraphPass:
    """Read the whole model from its graph, or each submodule that can be read on its own
    (whatever the deterministic-algorithms setting)."""
    with _any_kernels():
        return _graph_pass(model, args, dict(kwargs or {}), collapse)


def _graph_pass(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], collapse: bool) -> GraphPass:
    result = GraphPass()
    try:
        _read(model, "", args, kwargs, collapse, result)
        return result
    except Exception as err:
        result = GraphPass(failures=[f"<model>: {_reason(err)}"])
    try:
        captured = capture_inputs(model, args, kwargs)
        _read_children(model, "", captured, collapse, result)
    except Exception as err:  # the meta run itself broke in a way the hooks didn't survive
        result.failures.append(f"<submodules>: {_reason(err)}")
    return result
