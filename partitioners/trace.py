"""Trace a model into an ATen graph without touching it and without real memory or compute.

The model is deep-copied with every parameter and buffer replaced by a ``meta`` tensor of the same
shape and dtype (the user's tensors are never read or moved), example inputs are turned into meta
tensors, and the copy is traced with ``torch.export.export(strict=False)``; if export refuses the
model, with ``make_fx`` from ``torch.fx`` (pre-dispatch, so ``aten.linear`` and
``scaled_dot_product_attention`` stay whole). Both give an ATen graph whose parameter placeholders
are labelled with parameter names; :mod:`partitioners.graph_roles` reads roles from it. If both
refuse, they try again with the forward's data-dependent code (an expert loop over ``nonzero``, a
branch on ``mask.any()``) taken at its upper bound (:mod:`partitioners.upper_bounds`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from .ops import CONSTANT
from .param_names import canonical_names
from .repeats import collapse_repeated_blocks
from .subgraphs import inline_subgraph_calls
from .upper_bounds import UpperBounds, example_values, explore


class TraceError(RuntimeError):
    """Neither tracer could capture the model's forward."""


@dataclass
class TracedGraph:
    """An ATen graph of the forward, with parameter placeholders named."""

    graph: fx.Graph
    #: placeholder node -> parameter name in the traced copy (tied parameters appear once)
    params: dict[fx.Node, str]
    #: "export" or "fx": which tracer produced the graph (recorded as ``decided_by``)
    method: str
    #: shapes of the traced copy's parameters, by name
    shapes: dict[str, tuple[int, ...]]
    #: maps a parameter name of the user's model to its name in the traced (collapsed) copy
    rename: Callable[[str], str]
    #: the forward's data-dependent code was traced at its upper bound (:mod:`.upper_bounds`)
    bounded: bool = False

    @property
    def decided_by(self) -> str:
        """``method``, with ``upper bounds`` added when the data-dependent code was bounded."""
        return f"{self.method} (upper bounds)" if self.bounded else self.method


# ---- meta copies and meta inputs --------------------------------------------------------------
def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters, buffers and tensor attributes live on ``meta``.

    Tied parameters stay tied (one meta tensor per original tensor); nothing of ``model`` changes.
    The copy has no forward/backward hooks: the user's hooks must not run on the trace.
    """
    memo: dict[int, Any] = {}
    for module in model.modules():
        for t in module.__dict__.get("_parameters", {}).values():
            if t is not None and id(t) not in memo:
                memo[id(t)] = nn.Parameter(torch.empty_like(t, device="meta"), requires_grad=t.requires_grad)
        tensors = list(module.__dict__.get("_buffers", {}).values())
        tensors += [v for v in module.__dict__.values() if isinstance(v, torch.Tensor)]
        for t in tensors:
            if t is not None and id(t) not in memo:
                memo[id(t)] = torch.empty_like(t, device="meta")
    clone = copy.deepcopy(model, memo)
    for module in clone.modules():  # the user's hooks must not see (or act on) the trace
        for hooks in (
            module._forward_hooks,
            module._forward_pre_hooks,
            module._backward_hooks,
            module._backward_pre_hooks,
        ):
            hooks.clear()
    return clone


def _meta_leaf(x: Any, dtype: torch.dtype) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.empty_like(x, device="meta")
    if isinstance(x, torch.Size):
        return torch.empty(x, dtype=dtype, device="meta")
    return x


def meta_inputs(inputs: Any, dtype: torch.dtype = torch.long) -> Any:
    """``inputs`` with every tensor replaced by a meta tensor and every ``torch.Size`` by a meta
    tensor of that shape and ``dtype`` (token ids by default)."""
    return pytree.tree_map(
        lambda x: _meta_leaf(x, dtype), inputs, is_leaf=lambda x: isinstance(x, torch.Size)
    )


def _has_shapes(inputs: Any) -> bool:
    leaves = pytree.tree_leaves(inputs, is_leaf=lambda x: isinstance(x, torch.Size))
    return any(isinstance(x, torch.Size) for x in leaves)


def tensor_leaves(obj: Any, _seen: set[int] | None = None) -> list[torch.Tensor]:
    """Every tensor reachable from a model output: tuples, dicts, dataclasses, caches, objects."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        children: Sequence[Any] = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        children = obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        children = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif hasattr(obj, "__dict__") and not isinstance(obj, (type, nn.Module)):
        children = list(vars(obj).values())
    else:
        return []
    return [t for c in children for t in tensor_leaves(c, seen)]


_PLAIN = (torch.Tensor, int, float, bool, str, type(None))


class _TensorOutputs(nn.Module):
    """Runs the model and returns the tensors of its output as a flat tuple (export needs that).

    Inputs that export can't take (a cache object handed to one layer) are bound here as
    constants; :meth:`inputs` gives the rest, flat, as the traced forward's arguments. With
    :attr:`bounds` set, the forward runs its data-dependent code at its upper bound.
    """

    def __init__(
        self, model: nn.Module, args: tuple, kwargs: dict, values: Sequence[tuple[int, torch.Tensor]] = ()
    ):
        super().__init__()
        self.model = model
        leaves, self._spec = pytree.tree_flatten((args, kwargs))
        self._leaves = leaves
        #: (leaf position, values) of the example inputs whose values are known
        self._values = list(values)
        self._free = [i for i, leaf in enumerate(leaves) if isinstance(leaf, _PLAIN)]
        #: entered around the model's forward, inside the tracer (so that it sees calls first)
        self.bounds: UpperBounds | None = None

    def inputs(self) -> tuple[Any, ...]:
        return tuple(self._leaves[i] for i in self._free)

    def forward(self, *free: Any) -> tuple[torch.Tensor, ...]:
        leaves = list(self._leaves)
        for i, value in zip(self._free, free):
            leaves[i] = value
        args, kwargs = pytree.tree_unflatten(leaves, self._spec)
        if self.bounds is None:
            return tuple(tensor_leaves(self.model(*args, **kwargs)))
        with self.bounds:
            for i, values in self._values:
                self.bounds.know(leaves[i], values)
            return tuple(tensor_leaves(self.model(*args, **kwargs)))


# ---- list indices as slices ---------------------------------------------------------------------
def _as_slice(index: Any) -> Any:
    """``[a, a+1, ..., b]`` (ints of one sign) as ``slice(a, b+1)``; anything else as it is."""
    if isinstance(index, list) and index and all(type(i) is int for i in index):
        first, last = index[0], index[-1]
        if all(i == first + k for k, i in enumerate(index)) and (first < 0) == (last < 0):
            return slice(first, None if last == -1 else last + 1)
    return index


def _getitem_with_slices(getitem: Callable[..., Any]) -> Callable[..., Any]:
    def getitem_(self: torch.Tensor, index: Any) -> Any:
        if isinstance(index, tuple) and sum(isinstance(i, list) for i in index) == 1:
            index = tuple(_as_slice(i) for i in index)
        elif isinstance(index, list):
            index = _as_slice(index)
        return getitem(self, index)

    return getitem_


@contextlib.contextmanager
def list_index_as_slice() -> Iterator[None]:
    """Traces ``x[..., [-2], :]`` as the equal ``x[..., -2:-1, :]``.

    A list index becomes a constant index tensor, and on meta its values are gone, so the rows it
    picks (Falcon's key and value heads) could not be followed; a slice keeps them. Only a single
    list of consecutive ints is rewritten (two lists index pairwise, not as a product). Patching
    ``Tensor.__getitem__`` for the trace costs nothing elsewhere (a torch-function mode would
    see every call).
    """
    with _wrapped(torch.Tensor, "__getitem__", _getitem_with_slices):
        yield


# ---- module casts in the forward -------------------------------------------------------------
def _to_in_place(to: Callable[..., Any]) -> Callable[..., Any]:
    def to_(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        like = kwargs.get("tensor", next((a for a in args if isinstance(a, torch.Tensor)), None))
        dtype = like.dtype if like is not None else kwargs.get("dtype")
        dtype = dtype or next((a for a in args if isinstance(a, torch.dtype)), None)
        tensors = [*self.parameters(), *self.buffers()]
        if dtype is None or all(t.dtype == dtype for t in tensors if t.is_floating_point()):
            return self  # the device stays meta: a trace never moves the copy
        return to(self, *args, **kwargs)

    return to_


@contextlib.contextmanager
def module_casts_kept() -> Iterator[None]:
    """Traces ``self.proj = self.proj.to(self.dtype)`` in a forward (Switch Transformers' router)
    as the no-op it is on the meta copy.

    ``Module.to`` swaps every parameter for a converted one, which fails on the tracer's stand-ins
    for the parameters (``_apply(): Couldn't swap``); a cast to the dtype the parameters already
    have, or to another device (the copy stays on ``meta``), changes nothing, so it is skipped.
    """
    with _wrapped(nn.Module, "to", _to_in_place):
        yield


@contextlib.contextmanager
def _wrapped(owner: type, name: str, wrap: Callable[[Any], Any]) -> Iterator[None]:
    """``owner.name`` replaced by ``wrap(owner.name)`` inside the block, restored after."""
    original = getattr(owner, name)
    setattr(owner, name, wrap(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


# ---- the two tracers ---------------------------------------------------------------------------
_PREFIX = "model."


def _export(wrapper: nn.Module, args: tuple, kwargs: dict) -> tuple[fx.Graph, dict[fx.Node, str]]:
    program = torch.export.export(wrapper, args, kwargs, strict=False)
    inline_subgraph_calls(program.graph_module)
    constants = program.graph_signature.inputs_to_lifted_tensor_constants
    for node in program.graph.nodes:  # index tensors written in the forward (``x[..., [-2], :]``)
        value = program.constants.get(constants.get(node.name, ""))
        if isinstance(value, torch.Tensor) and value.device.type != "meta":
            node.meta[CONSTANT] = value
    by_input = program.graph_signature.inputs_to_parameters
    params = {
        node: by_input[node.name][len(_PREFIX) :]
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in by_input
    }
    return program.graph, params


def _make_fx(wrapper: nn.Module, args: tuple, kwargs: dict) -> tuple[fx.Graph, dict[fx.Node, str]]:
    from torch.fx.experimental.proxy_tensor import make_fx

    named = dict(wrapper.named_parameters())  # tied parameters once
    names = list(named)

    def forward(params: list[torch.Tensor], args: tuple, kwargs: dict) -> tuple[torch.Tensor, ...]:
        return torch.func.functional_call(wrapper, dict(zip(names, params)), args, kwargs)

    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # it prints graphs on failure
        gm = make_fx(forward, tracing_mode="real", pre_dispatch=True)(list(named.values()), args, kwargs)
    for node in gm.graph.nodes:
        value = getattr(gm, node.target, None) if node.op == "get_attr" else None
        if isinstance(value, torch.Tensor) and value.device.type != "meta":
            node.meta[CONSTANT] = value
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    params = {node: name[len(_PREFIX) :] for node, name in zip(placeholders, names)}
    return gm.graph, params


TRACERS: tuple[tuple[str, Callable[..., tuple[fx.Graph, dict[fx.Node, str]]]], ...] = (
    ("export", _export),
    ("fx", _make_fx),
)


def trace(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    example_kwargs: dict[str, Any] | None = None,
    collapse_repeats: bool = True,
) -> TracedGraph:
    """Trace a meta copy of ``model`` on meta versions of the example inputs.

    With ``collapse_repeats``, runs of structurally identical blocks in a ``ModuleList`` or
    ``Sequential`` are traced once (see :mod:`partitioners.repeats`); if the collapsed copy
    doesn't run, the full copy is traced. If no tracer captures the forward as it is, they try
    again with its data-dependent code at its upper bound (:mod:`partitioners.upper_bounds`).
    Raises :class:`TraceError` with every tracer's reason.
    """
    errors: list[str] = []
    for bounded in (False, True):
        found = _trace_copies(model, example_inputs, example_kwargs, collapse_repeats, bounded, errors)
        if found is not None:
            return found
    raise TraceError("could not trace the model:\n  " + "\n  ".join(errors))


def _trace_copies(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    example_kwargs: dict[str, Any] | None,
    collapse_repeats: bool,
    bounded: bool,
    errors: list[str],
) -> TracedGraph | None:
    """The first graph a tracer gives of the collapsed, then the full copy; ``None`` (reasons
    added to ``errors``) if none does."""
    attempts = (True, False) if collapse_repeats else (False,)
    for collapse in attempts:
        copy_ = meta_copy(model).eval()
        size = sum(1 for _ in copy_.parameters())
        rename = collapse_repeated_blocks(copy_) if collapse else (lambda name: name)
        collapsed = collapse and size != sum(1 for _ in copy_.parameters())
        for dtype in (torch.long, next((p.dtype for p in copy_.parameters()), torch.float32)):
            args = tuple(meta_inputs(tuple(example_inputs), dtype))
            kwargs = meta_inputs(dict(example_kwargs or {}), dtype)
            values = example_values((tuple(example_inputs), dict(example_kwargs or {})), (args, kwargs))
            wrapper = _TensorOutputs(copy_, args, kwargs, values)
            for method, tracer in TRACERS:

                def run(
                    bounds: UpperBounds | None,
                    tracer: Callable[..., Any] = tracer,
                    wrapper: _TensorOutputs = wrapper,
                ) -> tuple[fx.Graph, dict[fx.Node, str]]:
                    wrapper.bounds = bounds
                    with list_index_as_slice(), module_casts_kept():
                        return tracer(wrapper, wrapper.inputs(), {})

                try:
                    graph, params = explore(run) if bounded else run(None)
                except Exception as err:
                    where = "".join(
                        (" (collapsed)" if collapsed else "", " (upper bounds)" if bounded else "")
                    )
                    errors.append(f"{method}{where}: {type(err).__name__}: {str(err)[:300]}")
                    continue
                alias = canonical_names(copy_)
                shapes = {n: tuple(p.shape) for n, p in copy_.named_parameters()}
                params = {node: alias.get(name, name) for node, name in params.items()}
                return TracedGraph(graph, params, method, shapes, rename, bounded)
            if not _has_shapes((example_inputs, example_kwargs)):
                break  # the input dtype only matters for inputs given as shapes
        if collapse and not collapsed:
            break  # nothing was collapsed: the full copy would fail the same way
    return None
