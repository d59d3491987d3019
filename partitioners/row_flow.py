"""Follow a projection's output rows through data movement to attention inputs.

The projection's output is replaced by an *index* tensor: every element holds the number of the
weight row that produced it. The graph's data-movement ops (view, reshape, transpose, permute,
split, chunk, unbind, select, slice, cat, expand, rotary's ``x*cos + rotate_half(x)*sin``...) are
re-run on that tensor, so at an attention input ``(..., heads, T, head_dim)`` each head's slice
holds exactly the rows that feed that head. Elementwise ops with an unlabelled operand keep the
labels; when two labelled tensors meet (rotary), the rows they pair are merged into one group.
"""

from __future__ import annotations

import heapq
import operator
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

#: label tensors larger than this are not materialized (the flow stops there)
MAX_LABELS = 1 << 26

#: run on the label tensor as they are
MOVE_OPS = frozenset(
    {
        "view",
        "reshape",
        "_unsafe_view",
        "transpose",
        "t",
        "permute",
        "unsqueeze",
        "squeeze",
        "expand",
        "slice",
        "select",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
        "narrow",
        "unflatten",
        "flatten",
        "movedim",
        "repeat",
        "repeat_interleave",
        "numpy_T",
        "view_as",
        "expand_as",
        "getitem",
        "contiguous",
        "clone",
    }
)
#: return their (first) input's labels
IDENTITY_OPS = frozenset(
    {
        "alias",
        "detach",
        "detach_",
        "to",
        "_to_copy",
        "type_as",
        "dropout",
        "lift_fresh_copy",
        "_to_dim_order_copy",
        "feature_dropout",
        "native_dropout",
    }
)
#: elementwise: labels broadcast from the labelled operands
ELEMENTWISE_OPS = frozenset(
    {
        "add",
        "sub",
        "mul",
        "div",
        "neg",
        "add_",
        "mul_",
        "div_",
        "sub_",
        "rsub",
    }
)
MATMUL_OPS = frozenset({"matmul", "bmm", "baddbmm"})
SOFTMAX_OPS = frozenset({"softmax", "_softmax", "_safe_softmax", "log_softmax"})
#: ops between q@k^T and softmax, and between softmax and @v (scale, mask, dropout, casts)
SCORE_OPS = (
    IDENTITY_OPS
    | ELEMENTWISE_OPS
    | frozenset(
        {
            "masked_fill",
            "where",
            "clamp",
            "tanh",
            "view",
            "reshape",
            "_unsafe_view",
            "contiguous",
            "expand",
            "clone",
            "softcap",
        }
    )
)


def op_name(node: fx.Node) -> str:
    """``'linear'`` for ``aten.linear.default``, ``'getitem'`` for ``operator.getitem``..."""
    if node.op != "call_function":
        return ""
    if node.target is operator.getitem:
        return "getitem"
    return getattr(node.target, "_opname", getattr(node.target, "__name__", str(node.target)))


def shape_of(node: Any) -> tuple[int, ...] | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return tuple(int(s) for s in val.shape) if isinstance(val, torch.Tensor) else None


@dataclass
class AttentionSite:
    """One attention: its query, key, value inputs and its output node.

    ``key_transposed``: the key node holds ``k^T`` (hand-written ``q @ k.transpose(-2, -1)``).
    """

    query: fx.Node
    key: fx.Node
    value: fx.Node
    output: fx.Node
    key_transposed: bool = False


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    return [a for a in node.all_input_nodes if shape_of(a) is not None]


def _walk(node: fx.Node, ops: frozenset[str], forward: bool, depth: int = 8) -> Iterable[fx.Node]:
    """Nodes reachable from ``node`` through ``ops`` (inclusive of the first node outside them)."""
    frontier = [node]
    seen = {node}
    for _ in range(depth):
        nxt = []
        for n in frontier:
            for m in n.users if forward else _tensor_args(n):
                if m in seen:
                    continue
                seen.add(m)
                yield m
                if op_name(m) in ops:
                    nxt.append(m)
        frontier = nxt


def _first(matmul: fx.Node) -> int:
    """Position of the first matrix operand (``baddbmm`` takes the added tensor first)."""
    return 1 if op_name(matmul) == "baddbmm" else 0


def attention_sites(graph: fx.Graph) -> list[AttentionSite]:
    """Every ``scaled_dot_product_attention`` and every hand-written ``softmax(q @ k^T) @ v``."""
    sites = []
    for node in graph.nodes:
        name = op_name(node)
        if name == "scaled_dot_product_attention" or name.startswith("_scaled_dot_product"):
            q, k, v = node.args[:3]
            out = node
            if name != "scaled_dot_product_attention":  # tuple output: (out, logsumexp, ...)
                out = next((u for u in node.users if op_name(u) == "getitem" and u.args[1] == 0), node)
            sites.append(AttentionSite(q, k, v, out))
        elif name in SOFTMAX_OPS:
            scores = next(
                (m for m in _walk(node, SCORE_OPS, forward=False) if op_name(m) in MATMUL_OPS), None
            )
            probs = {node} | {m for m in _walk(node, SCORE_OPS, forward=True) if op_name(m) in SCORE_OPS}
            mix = next(
                (
                    u
                    for p in probs
                    for u in p.users
                    if op_name(u) in MATMUL_OPS and u.args[_first(u)] in probs
                ),
                None,
            )
            if scores is None or mix is None:
                continue
            q = _first(scores)
            sites.append(
                AttentionSite(scores.args[q], scores.args[q + 1], mix.args[_first(mix) + 1], mix, True)
            )
    return sites


# ---- label propagation ------------------------------------------------------------------------
@dataclass
class LabelFlow:
    """Labels (row numbers, -1 for none) of every node reached from a start node."""

    labels: dict[fx.Node, Any] = field(default_factory=dict)
    #: pairs of rows that met in one element (rotary): they belong to one block
    merged: list[tuple[int, int]] = field(default_factory=list)

    def groups(self) -> dict[int, set[int]]:
        """Row -> the set of rows merged with it (only rows that were merged appear)."""
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            while parent.get(x, x) != x:
                x = parent[x]
            return x

        for a, b in self.merged:
            parent.setdefault(a, a)
            parent.setdefault(b, b)
            parent[find(a)] = find(b)
        classes: dict[int, set[int]] = {}
        for x in parent:
            classes.setdefault(find(x), set()).add(x)
        return {x: classes[find(x)] for x in parent}


def _substitute(arg: Any, labels: dict[fx.Node, Any]) -> Any:
    if isinstance(arg, fx.Node):
        if arg in labels:
            return labels[arg]
        val = arg.meta.get("val")
        if isinstance(val, (int, float, bool)):
            return val
        raise KeyError(arg)
    if isinstance(arg, (list, tuple)):
        return type(arg)(_substitute(a, labels) for a in arg)
    return arg


def _fill(node: fx.Node, shape: tuple[int, ...] | None) -> torch.Tensor:
    if shape is None:
        raise KeyError(node)
    return torch.full(shape, -1, dtype=torch.int32)


def _elementwise(node: fx.Node, flow: LabelFlow) -> torch.Tensor | None:
    out_shape = shape_of(node)
    if out_shape is None:
        return None
    parts = [flow.labels[a] for a in node.args if isinstance(a, fx.Node) and a in flow.labels]
    first = parts[0].broadcast_to(out_shape)
    for other in parts[1:]:
        other = other.broadcast_to(out_shape)
        both = (first >= 0) & (other >= 0) & (first != other)
        if both.any():  # one int64 per (row, row) pair: a 1-D unique is much faster than dim=0
            pairs = (first[both].long() << 32 | other[both].long()).unique()
            flow.merged.extend((p >> 32, p & 0xFFFFFFFF) for p in pairs.tolist())
        first = torch.where(first >= 0, first, other)
    return first


def _step(node: fx.Node, flow: LabelFlow, mixing: bool) -> Any:
    name = op_name(node)
    if name in IDENTITY_OPS:
        return flow.labels[node.args[0]]
    if name in ELEMENTWISE_OPS:
        if not mixing and sum(isinstance(a, fx.Node) for a in node.args) > 1:
            return None
        return _elementwise(node, flow)
    if name == "cat":
        tensors, *rest = node.args
        parts = [flow.labels[t] if t in flow.labels else _fill(t, shape_of(t)) for t in tensors]
        return torch.cat(parts, *rest)
    if name in MOVE_OPS:
        args = _substitute(node.args, flow.labels)
        kwargs = _substitute(dict(node.kwargs), flow.labels)
        if name == "getitem":
            return operator.getitem(*args)
        return node.target(*args, **kwargs)
    return None


def propagate(start: fx.Node, labels: torch.Tensor, mixing: bool = True) -> LabelFlow:
    """Run the data-movement ops downstream of ``start`` on ``labels`` (``start``'s labels).

    ``mixing``: also pass elementwise ops with other tensors (rotary's ``x * cos``, a residual
    add); without it only data movement, casts and scalar arithmetic keep the labels, which is
    what "this tensor *is* that projection's output" means (output head, attention output).
    """
    order = {n: i for i, n in enumerate(start.graph.nodes)}
    flow = LabelFlow({start: labels})
    heap = [(order[u], id(u), u) for u in start.users]
    heapq.heapify(heap)
    queued = set(start.users)
    while heap:
        _, _, node = heapq.heappop(heap)
        try:
            out = _step(node, flow, mixing)
        except (KeyError, RuntimeError, TypeError, ValueError, IndexError):
            out = None
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
        for user in node.users:
            if user not in queued:
                queued.add(user)
                heapq.heappush(heap, (order[user], id(user), user))
    return flow


def index_labels(node: fx.Node, dim: int) -> torch.Tensor | None:
    """An index tensor shaped like ``node``'s output: each element holds its index along ``dim``."""
    shape = shape_of(node)
    if shape is None:
        return None
    dim = dim % len(shape)
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return torch.arange(shape[dim], dtype=torch.int32).view(view).expand(shape)


def head_row_sets(labels: torch.Tensor, flow: LabelFlow) -> list[frozenset[int]]:
    """For an attention input labelled ``(..., T, D)``: the set of rows feeding each head."""
    groups = flow.groups()
    flat = (
        labels.reshape(-1, labels.shape[-2] * labels.shape[-1])
        if labels.dim() >= 2
        else labels.reshape(1, -1)
    )
    sets = set()
    for row in flat.unique(dim=0):
        rows = {int(r) for r in row.unique().tolist() if r >= 0}
        for r in list(rows):
            rows |= groups.get(r, set())
        if rows:
            sets.add(frozenset(rows))
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
            targets.query_heads += head_row_sets(flow.labels[site.query], flow)
        if site.key in flow.labels:
            key = flow.labels[site.key]
            targets.key_heads += head_row_sets(key.transpose(-2, -1) if site.key_transposed else key, flow)
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
