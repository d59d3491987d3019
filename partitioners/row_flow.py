"""Follow a projection's output rows through data movement to attention inputs.

The projection's output is replaced by an *index* tensor: every element holds the number of the
weight row that produced it (-1: no row). The graph's data-movement ops (:data:`~.ops.MOVE_OPS`:
views, splits, slices, cat, expand, repeat...), writes into fresh tensors (``new_empty`` then
``copy_`` into slices, ``slice_scatter``), complex views and rotary's ``x*cos + rotate_half(x)*sin``
are re-run on that tensor, so at an attention input each head's slice holds exactly the rows that
feed that head. Elementwise ops with an unlabelled operand keep the labels; when two labelled
tensors meet (rotary, a complex pair), the rows they pair are merged into one group. A tensor
without labels joined to the rows (``cat``, ``stack``) holds no row; one that only gives a shape
(``expand_as``, ``view_as``) needs none. An op that can't be re-run (a symbolic size, a
data-dependent index) ends the flow there.
"""

from __future__ import annotations

import heapq
import operator
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import fx
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from .attention import AttentionSite
from .ops import (
    COMPLEX_OPS,
    CONSTANT,
    CONV_OPS,
    CREATION_OPS,
    ELEMENTWISE_OPS,
    FEATURE_MAPS,
    IDENTITY_OPS,
    INPLACE_WRITE_OPS,
    MOVE_OPS,
    NORM_OPS,
    SCATTER_OPS,
    args_of,
    is_tensor,
    op_name,
    shape_of,
)

#: label tensors larger than this are not materialized (the flow stops there)
MAX_LABELS = 1 << 26


@dataclass
class LabelFlow:
    """Labels (row numbers, -1 for none) of every node reached from a start node."""

    labels: dict[fx.Node, Any] = field(default_factory=dict)
    #: position in the graph of the node the labels start at (nodes before it can't carry them)
    start: int = 0
    #: the node the labels start at
    source: fx.Node | None = None
    #: rows that met in one element (rotary), as ``a << 32 | b``: they belong to one block
    merged: list[torch.Tensor] = field(default_factory=list)

    def components(self, n_rows: int) -> torch.Tensor:
        """For each row, the smallest row it is (transitively) merged with."""
        root = torch.arange(n_rows)
        if not self.merged:
            return root
        pairs = torch.cat(self.merged).unique()
        a, b = pairs >> 32, pairs & 0xFFFFFFFF
        while True:  # min-label propagation with pointer jumping: a few rounds
            low = torch.minimum(root[a], root[b])
            new = root.scatter_reduce(0, a, low, "amin").scatter_reduce(0, b, low, "amin")
            new = new[new]
            if torch.equal(new, root):
                return root
            root = new

    def pair(self, first: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """Record the rows that meet elementwise in ``first`` and ``other``; the merged labels."""
        both = (first >= 0) & (other >= 0) & (first != other)
        if both.any():  # one int64 per (row, row) pair: a 1-D unique is much faster than dim=0
            self.merged.append((first[both].long() << 32 | other[both].long()).unique())
        return torch.where(first >= 0, first, other)


def _fill(node: fx.Node) -> torch.Tensor:
    shape = shape_of(node)
    if shape is None:
        raise KeyError(node)
    return torch.full(shape, -1, dtype=torch.int32)


def _resolve(arg: fx.Node, flow: LabelFlow, fresh: bool) -> Any:
    """``arg``'s labels; with ``fresh``, a tensor nobody labelled yet (a fresh tensor, or a view
    of one) gets -1 everywhere, stored so that later writes into its views show in it."""
    if arg in flow.labels:
        return flow.labels[arg]
    if CONSTANT in arg.meta:  # an index written in the forward
        return arg.meta[CONSTANT]
    val = arg.meta.get("val")
    if isinstance(val, (int, float, bool, torch.SymInt)) and not isinstance(val, torch.Tensor):
        if isinstance(val, torch.SymInt) and not is_concrete_int(val):
            raise KeyError(arg)
        return int(val) if isinstance(val, torch.SymInt) else val
    name = op_name(arg)
    if fresh and name in CREATION_OPS:
        flow.labels[arg] = _fill(arg)
    elif fresh and name in MOVE_OPS and isinstance(args_of(arg)[0], fx.Node):
        _resolve(args_of(arg)[0], flow, fresh)
        flow.labels[arg] = _run(arg, flow, fresh)
    elif fresh:
        return _fill(arg)
    else:
        raise KeyError(arg)
    return flow.labels[arg]


def _substitute(arg: Any, flow: LabelFlow, fresh: bool = False) -> Any:
    if isinstance(arg, fx.Node):
        return _resolve(arg, flow, fresh)
    if isinstance(arg, (list, tuple)):
        return type(arg)(_substitute(a, flow, fresh) for a in arg)
    return arg


def _run(node: fx.Node, flow: LabelFlow, fresh: bool = False) -> Any:
    """Run a data-movement op on labels."""
    args = _substitute(args_of(node), flow, fresh)
    kwargs = _substitute(dict(node.kwargs), flow, fresh)
    name = op_name(node)
    if name == "getitem":
        return operator.getitem(*args)
    if name in ("view", "_unsafe_view"):  # labels may be expanded views: reshape copies then
        return args[0].reshape(args[1])
    if name == "view_as":
        return args[0].reshape(args[1].shape)
    return cast(Callable[..., Any], node.target)(*args, **kwargs)  # a call_function node


def _elementwise(node: fx.Node, flow: LabelFlow) -> torch.Tensor | None:
    out_shape = shape_of(node)
    if out_shape is None:
        return None
    parts = [flow.labels[a] for a in args_of(node) if isinstance(a, fx.Node) and a in flow.labels]
    first = parts[0].broadcast_to(out_shape)
    for other in parts[1:]:
        first = flow.pair(first, other.broadcast_to(out_shape))
    return first


def _complex(node: fx.Node, flow: LabelFlow) -> torch.Tensor | None:
    name = op_name(node)
    if name == "view_as_complex":  # (..., 2) real pairs -> (...) complex: the pair is one row group
        pairs = flow.labels[args_of(node)[0]]
        return flow.pair(pairs[..., 0], pairs[..., 1])
    if name == "view_as_real":
        labels = flow.labels[args_of(node)[0]]
        return labels.unsqueeze(-1).expand(*labels.shape, 2)
    return _elementwise(node, flow)  # polar / complex(real, imag): elementwise pairing


def _feature_map(node: fx.Node, flow: LabelFlow) -> torch.Tensor | None:
    """An activation, a constant pad (padding holds no row) or a depthwise convolution (each
    channel read from its own input channel along a position axis that holds one row)."""
    name, labels = op_name(node), flow.labels[args_of(node)[0]]
    if name in ("pad", "constant_pad_nd"):
        mode = node.kwargs.get(
            "mode", args_of(node)[2] if name == "pad" and len(args_of(node)) > 2 else "constant"
        )
        return torch.constant_pad_nd(labels, args_of(node)[1], -1) if mode == "constant" else None
    if name not in CONV_OPS:
        return labels
    weight, out = shape_of(args_of(node)[1]), shape_of(node)
    transposed = name.startswith("conv_transpose") or (
        name in ("convolution", "_convolution") and args_of(node)[6]
    )
    if weight is None or out is None or transposed or weight[1] != 1 or weight[0] != labels.shape[1]:
        return None
    per_channel = labels.flatten(2)[..., :1]
    if not torch.equal(labels.flatten(2), per_channel.expand_as(labels.flatten(2))):
        return None
    return per_channel.reshape(*per_channel.shape[:2], *[1] * (len(out) - 2)).expand(out)


def _write_alias_chain(node: fx.Node) -> list[fx.Node]:
    """``node`` and the tensors it is a view of, down to the base (written through by ``copy_``)."""
    chain = [node]
    while op_name(chain[-1]) in MOVE_OPS and isinstance(args_of(chain[-1])[0], fx.Node):
        chain.append(args_of(chain[-1])[0])
    return chain


def _computed_from(node: fx.Node, source: fx.Node) -> bool:
    """``source`` is ``node`` or one of the nodes it is computed from."""
    order = _node_order(node.graph)
    seen, todo = {node}, [node]
    while todo:
        current = todo.pop()
        if current is source:
            return True
        for arg in current.all_input_nodes:  # nothing before ``source`` can lead back to it
            if arg not in seen and order[arg] >= order[source]:
                seen.add(arg)
                todo.append(arg)
    return False


def _joins_residual_stream(node: fx.Node, flow: LabelFlow) -> bool:
    """``x + f(x)``: a sum with an unlabelled tensor of the full output shape that the rows'
    projection is computed from, or that is computed from it. The rows of ``f``'s projection end
    there (past it every later layer would carry them), and so do ``x``'s when ``x`` is a
    projection's output. A bias, a position table or a rotary partner is broadcast, labelled, or
    apart from the rows; so is ``g(x)`` in ``f(x) + g(x)`` (a low-rank adapter added to a
    projection's output, parallel branches): two projections write the same rows, which go on."""
    if op_name(node).rstrip("_") not in ("add", "sub"):
        return False
    shape, source = shape_of(node), flow.source
    assert source is not None, "set by propagate"
    return any(
        isinstance(a, fx.Node)
        and a not in flow.labels
        and shape_of(a) == shape
        and (_computed_from(source, a) or _computed_from(a, source))
        for a in args_of(node)
    )


def _step(node: fx.Node, flow: LabelFlow, mixing: bool) -> Any:
    name = op_name(node)
    if name in IDENTITY_OPS:
        return flow.labels[args_of(node)[0]]
    if name in ELEMENTWISE_OPS:
        if not mixing and sum(isinstance(a, fx.Node) for a in args_of(node)) > 1:
            return None
        if _joins_residual_stream(node, flow):
            return None
        return _elementwise(node, flow)
    if name in COMPLEX_OPS:
        return _complex(node, flow) if mixing else None
    if name in FEATURE_MAPS or name in CONV_OPS:
        return _feature_map(node, flow) if mixing and args_of(node)[0] in flow.labels else None
    if name in NORM_OPS:  # a per-head q/k norm: each element keeps its row
        if not mixing or args_of(node)[0] not in flow.labels:
            return None
        labels = flow.labels[args_of(node)[0]]
        return labels if is_tensor(node) else (labels,)
    if name in ("cat", "stack"):  # an unlabelled tensor joined to the rows holds no row (-1)
        tensors, *rest = args_of(node)
        return cast(Callable[..., Any], node.target)([_resolve(t, flow, fresh=True) for t in tensors], *rest)
    if name in ("expand_as", "view_as", "reshape_as"):  # the other gives only a shape, labels or not
        return _run(node, flow, fresh=True)
    if name in CREATION_OPS:
        return _fill(node)
    if name in SCATTER_OPS:
        if name == "index_put" and any(i is not None for i in args_of(node)[1]):
            return None  # data-dependent positions
        return _run(node, flow, fresh=True)
    if name in INPLACE_WRITE_OPS:
        if name == "index_put_" and any(i is not None for i in args_of(node)[1]):
            return None
        _run(node, flow, fresh=True)
        return None  # the base was written in place; its users are queued by the caller
    if name in MOVE_OPS:
        return _run(node, flow)
    return None


_ORDERS: weakref.WeakKeyDictionary[fx.Graph, dict[fx.Node, int]] = weakref.WeakKeyDictionary()


def _node_order(graph: fx.Graph) -> dict[fx.Node, int]:
    """Each node's position in ``graph`` (computed once per graph: propagation runs many times)."""
    if graph not in _ORDERS:
        _ORDERS[graph] = {n: i for i, n in enumerate(graph.nodes)}
    return _ORDERS[graph]


def propagate(start: fx.Node, labels: torch.Tensor, mixing: bool = True) -> LabelFlow:
    """Run the data-movement ops downstream of ``start`` on ``labels`` (``start``'s labels).

    ``mixing``: also pass elementwise ops with other tensors (rotary's ``x * cos``, a residual
    add); without it only data movement, casts and scalar arithmetic keep the labels, which is
    what "this tensor *is* that projection's output" means (output head, attention output).
    """
    order = _node_order(start.graph)
    flow = LabelFlow({start: labels}, order[start], source=start)
    heap = [(order[u], id(u), u) for u in start.users]
    heapq.heapify(heap)
    queued = set(start.users)

    def enqueue(users: Any) -> None:
        for user in users:
            if user not in queued:
                queued.add(user)
                heapq.heappush(heap, (order[user], id(user), user))

    while heap:
        _, _, node = heapq.heappop(heap)
        try:
            out = _step(node, flow, mixing)
        except Exception:  # an op the labels can't follow (symbolic size, data-dependent index)
            out = None
        if op_name(node) in INPLACE_WRITE_OPS and isinstance(args_of(node)[0], fx.Node):
            for written in _write_alias_chain(args_of(node)[0]):
                if written in flow.labels:
                    enqueue(written.users)
        if out is None:
            continue
        tensors = out if isinstance(out, (list, tuple)) else [out]
        if any(t.numel() > MAX_LABELS for t in tensors if isinstance(t, torch.Tensor)):
            warnings.warn(
                f"auto_partition: the row labels at {node.name} exceed {MAX_LABELS:,} elements, so "
                "attention heads past it are not followed (q/k may fall back to per-row blocks); "
                "trace with smaller example inputs, e.g. batch 1 and 16 tokens",
                stacklevel=2,
            )
            continue
        flow.labels[node] = out
        enqueue(node.users)
    return flow


def index_labels(node: fx.Node, dim: int) -> torch.Tensor | None:
    """An index tensor shaped like ``node``'s output: each element holds its index along ``dim``."""
    shape = shape_of(node)
    if shape is None or not shape:
        return None
    dim = dim % len(shape)
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return torch.arange(shape[dim], dtype=torch.int32).view(view).expand(shape)


def head_row_sets(labels: torch.Tensor, axis: int, flow: LabelFlow) -> list[frozenset[int]]:
    """The sets of rows contracted together along ``axis`` (the head dimension): one per head,
    with the rows merged into them (rotary partners)."""
    moved = labels.movedim(axis, -1) if labels.dim() else labels.reshape(1)
    heads = moved.reshape(-1, moved.shape[-1]).unique(dim=0)
    heads = heads[(heads >= 0).any(dim=1)]
    if not len(heads):
        return []
    if not flow.merged:
        return sorted({frozenset(h[h >= 0].tolist()) for h in heads}, key=min)
    ends = [int(heads.max())] + [int((m >> 32).max()) for m in flow.merged]
    ends += [int((m & 0xFFFFFFFF).max()) for m in flow.merged]
    root = flow.components(1 + max(ends))
    members: dict[int, list[int]] = {}
    for row, r in enumerate(root.tolist()):
        members.setdefault(r, []).append(row)
    sets = set()
    for head in heads:
        roots = root[head[head >= 0].long()].unique().tolist()
        sets.add(frozenset(r for c in roots for r in members[c]))
    return sorted(sets, key=min)


@dataclass
class RowTargets:
    """Where one projection's rows go."""

    query_heads: list[frozenset[int]] = field(default_factory=list)
    key_heads: list[frozenset[int]] = field(default_factory=list)
    value_rows: set[int] = field(default_factory=set)
    reaches_output: bool = False


def trace_rows(node: fx.Node, dim: int, sites: list[AttentionSite], output: fx.Node) -> RowTargets:
    """Follow the rows of ``node``'s output (indexed along ``dim``) to attention and the output."""
    targets = RowTargets()
    labels = index_labels(node, dim)
    if labels is None:
        return targets
    flow = propagate(node, labels)
    for site in sites:
        if site.query in flow.labels:
            targets.query_heads += head_row_sets(flow.labels[site.query], site.query_axis, flow)
        if site.key in flow.labels:
            targets.key_heads += head_row_sets(flow.labels[site.key], site.key_axis, flow)
        if site.value in flow.labels:
            targets.value_rows |= {int(r) for r in flow.labels[site.value].unique().tolist() if r >= 0}
    moved = propagate(node, labels, mixing=False).labels
    targets.reaches_output = any(a in moved for a in output.all_input_nodes)
    return targets


def attention_fed(sites: list[AttentionSite]) -> set[fx.Node]:
    """Nodes that hold an attention output moved around (transposed, reshaped, cast)."""
    reached: set[fx.Node] = set()
    for site in sites:
        labels = index_labels(site.output, -1)
        if labels is not None:
            reached |= set(propagate(site.output, labels, mixing=False).labels)
    return reached
