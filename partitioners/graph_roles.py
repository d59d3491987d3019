"""Roles and layouts of parameters, read from the operators that consume them.

Each parameter placeholder is followed through the views a forward takes of a weight (``t``,
``transpose``, ``permute``, ``select``/indexing of an expert, casts), keeping track of which
parameter axis each view axis is. The consuming op then says what the parameter is:

* ``embedding``                              -> table, rows along its dim 0
* ``linear``/``mm``/``addmm``/``matmul``/``bmm``/``einsum``/grouped mm -> projection; its
  output-neuron axis is the axis that indexes the op's outputs (dim 1 for ``x @ W``); a 3-D
  weight with an expert axis is an expert weight
* ``convolution``                            -> conv, output channels
* norm weight, or a 1-D factor of a ``mul``  -> norm scale;  norm/linear/conv bias, or a 1-D
  addend                                     -> bias

Projections are then followed with :func:`~partitioners.row_flow.trace_rows` to attention inputs
(query/key heads, value rows) and to the model output (output head); a projection fed by an
attention output is the attention output projection.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from torch import fx

from .layout import BlockLayout, Segment
from .row_flow import (
    IDENTITY_OPS,
    AttentionSite,
    RowTargets,
    attention_fed,
    attention_sites,
    op_name,
    shape_of,
    trace_rows,
)

#: Convolution weights: one block per output channel ("rows") or per tensor ("tensor").
#: "tensor" trained at least as well in benchmarks/conv_blocks.py (figures in the README).
CONV_BLOCKS = "tensor"


def conv_layout(out_axis: int) -> BlockLayout:
    """The layout of a convolution weight whose output channels run along ``out_axis``."""
    return BlockLayout.rows(out_axis) if CONV_BLOCKS == "rows" else BlockLayout.tensor()


NORM_OPS = {  # op -> (weight arg index, bias arg index)
    "layer_norm": (2, 3),
    "native_layer_norm": (2, 3),
    "rms_norm": (2, None),
    "group_norm": (2, 3),
    "native_group_norm": (1, 2),
    "batch_norm": (1, 2),
    "native_batch_norm": (1, 2),
    "_native_batch_norm_legit": (1, 2),
    "_native_batch_norm_legit_functional": (1, 2),
    "_native_batch_norm_legit_no_training": (1, 2),
    "instance_norm": (1, 2),
}
CONV_OPS = {
    "convolution",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "_convolution",
}
#: views of a weight that move or drop axes; the mapping is read from the shapes
_WEIGHT_VIEWS = {
    "t",
    "transpose",
    "permute",
    "numpy_T",
    "select",
    "index",
    "unsqueeze",
    "squeeze",
    "expand",
    "view",
    "reshape",
    "getitem",
}
_SCALAR_ARITH = {"add", "sub", "mul", "div", "rsub"}


@dataclass(frozen=True)
class Use:
    """How one op consumes a parameter.

    ``kind``: embedding | project | conv | scale | shift | unknown. For projections and tables,
    ``axis`` is the parameter axis indexing the op's outputs, ``batch_axes`` the expert axes, and
    ``node``/``out_dim`` the op output and its feature dimension.
    """

    kind: str
    axis: int | None = None
    batch_axes: tuple[int, ...] = ()
    node: fx.Node | None = None
    out_dim: int = -1
    input: fx.Node | None = None


@dataclass(frozen=True)
class Decision:
    role: str
    layout: BlockLayout


# ---- following a weight to its consumers -----------------------------------------------------
def _view_axes(node: fx.Node, axes: list[int | None]) -> list[int | None] | None:
    """Which parameter axis each axis of ``node`` (a view of a tensor with ``axes``) is."""
    name, args = op_name(node), node.args
    nd = len(axes)
    if name in ("t", "numpy_T"):
        return axes[::-1]
    if name == "transpose":
        out = list(axes)
        a, b = args[1] % nd, args[2] % nd
        out[a], out[b] = out[b], out[a]
        return out
    if name == "permute":
        return [axes[d % nd] for d in args[1]]
    if name == "select":
        return [a for i, a in enumerate(axes) if i != args[1] % nd]
    out_shape, in_shape = shape_of(node), shape_of(args[0])
    if out_shape is None or in_shape is None:
        return None
    if name in ("index", "getitem") and len(out_shape) == nd:  # W[expert_ids]: axes kept
        return list(axes)
    if name in ("index", "getitem") and len(out_shape) == nd - 1:  # W[e]: first axis gone
        return list(axes[1:])
    if name == "expand":
        return [None] * (len(out_shape) - nd) + list(axes)
    # unsqueeze / squeeze / view that only adds or drops size-1 axes
    if [s for s in out_shape if s != 1] == [s for s in in_shape if s != 1]:
        kept = iter(a for a, s in zip(axes, in_shape) if s != 1)
        return [None if s == 1 else next(kept) for s in out_shape]
    return None


def _einsum_use(node: fx.Node, index: int, axes: list[int | None]) -> Use:
    equation = node.args[0].replace(" ", "")
    inputs, output = equation.split("->")
    subs = inputs.split(",")
    mine, others = subs[index], "".join(s for i, s in enumerate(subs) if i != index)
    outs = [c for c in mine if c in output and c not in others]
    batch = tuple(axes[i] for i, c in enumerate(mine) if c in output and c in others and axes[i] is not None)
    if len(outs) != 1 or "." in equation:
        return Use("unknown")
    return Use("project", axes[mine.index(outs[0])], batch, node, output.index(outs[0]))


def _matmul_use(node: fx.Node, pos: int, axes: list[int | None], first: int) -> Use:
    """``a @ b`` with the weight at ``pos`` (``first`` is the position of ``a``)."""
    other = node.args[first + 1 - (pos - first)]
    if pos == first + 1:  # x @ W: outputs along W's last axis
        axis, out_dim = axes[-1], -1
    else:  # W @ x: outputs along W's rows
        axis, out_dim = axes[-2] if len(axes) >= 2 else None, -2
    batch = tuple(a for a in axes[:-2] if a is not None)
    return Use("project", axis, batch, node, out_dim, other if isinstance(other, fx.Node) else None)


def _consumer_use(node: fx.Node, pos: int, axes: list[int | None], ndim: int) -> Use:
    name = op_name(node)
    if name in ("embedding", "embedding_bag", "_embedding_bag"):
        return Use("embedding", axes[0]) if pos == 0 else Use("unknown")
    if name == "linear":
        if pos == 1:
            return Use(
                "project", axes[0], tuple(a for a in axes[1:-1] if a is not None), node, -1, node.args[0]
            )
        return Use("shift")
    if name in ("mm", "matmul", "bmm"):
        return _matmul_use(node, pos, axes, 0)
    if name in ("addmm", "baddbmm", "addbmm"):
        return Use("shift") if pos == 0 else _matmul_use(node, pos, axes, 1)
    if name == "einsum":
        return _einsum_use(node, pos - 1, axes) if pos >= 1 else Use("unknown")
    if "grouped_mm" in name:
        if pos == 1:
            return Use(
                "project", axes[-1], tuple(a for a in axes[:1] if a is not None), node, -1, node.args[0]
            )
        return Use("unknown")
    if name in CONV_OPS:
        if pos == 2:
            return Use("shift")
        transposed = "transpose" in name or (name in ("convolution", "_convolution") and bool(node.args[6]))
        return Use("conv", axes[1 if transposed else 0]) if pos == 1 else Use("unknown")
    if name in NORM_OPS:
        weight, bias = NORM_OPS[name]
        return Use("scale") if pos == weight else Use("shift") if pos == bias else Use("unknown")
    if name in ("mul", "div") and ndim == 1:
        return Use("scale")
    if name in ("add", "sub") and ndim == 1:
        return Use("shift")
    return Use("unknown")


def _position(user: fx.Node, node: fx.Node) -> int:
    """Where ``node`` is among ``user``'s arguments; einsum operands count from 1; -1 if nested."""
    if node in user.args:
        return user.args.index(node)
    if op_name(user) == "einsum" and node in user.args[1]:
        return 1 + list(user.args[1]).index(node)
    return -1


def parameter_uses(placeholder: fx.Node, ndim: int) -> list[Use]:
    """Every consumer of a parameter, seen through the views taken of it."""
    uses: list[Use] = []
    stack: list[tuple[fx.Node, list[int | None]]] = [(placeholder, list(range(ndim)))]
    while stack:
        node, axes = stack.pop()
        for user in node.users:
            name = op_name(user)
            if name == "_assert_tensor_metadata":
                continue
            pos = _position(user, node)
            scalar_arith = name in _SCALAR_ARITH and not any(
                isinstance(a, fx.Node) and a is not node for a in user.args
            )
            if name in IDENTITY_OPS or name in ("contiguous", "clone") or scalar_arith:
                stack.append((user, axes))
            elif name in _WEIGHT_VIEWS and pos == 0:
                moved = _view_axes(user, axes)
                if moved is None:
                    uses.append(Use("unknown"))
                else:
                    stack.append((user, moved))
            elif pos < 0:  # inside a list argument (cat, index)
                uses.append(Use("unknown"))
            else:
                uses.append(_consumer_use(user, pos, axes, ndim))
    return uses


# ---- projections: attention heads, output head ------------------------------------------------
def _contiguous_blocks(sets: list[frozenset[int]]) -> dict[int, int] | None:
    """First row -> size of each head block, or ``None`` if a head isn't a run of rows."""
    starts: dict[int, int] = {}
    for rows in sets:
        lo, n = min(rows), len(rows)
        if max(rows) - lo + 1 != n or starts.get(lo, n) != n:
            return None
        starts[lo] = n
    return starts


def _periodic(segments: list[Segment]) -> tuple[list[Segment], int]:
    n = len(segments)
    for period in range(1, n + 1):
        if n % period == 0 and all(segments[i] == segments[i % period] for i in range(n)):
            return segments[:period], n // period
    return segments, 1


def projection_layout(targets: RowTargets, n_rows: int, axis: int) -> tuple[str, BlockLayout] | None:
    """Role and layout of a projection's rows from where they go; ``None`` if heads overlap."""
    if not (targets.query_heads or targets.key_heads or targets.value_rows):
        return None  # not attention
    q = _contiguous_blocks(targets.query_heads)
    k = _contiguous_blocks(targets.key_heads)
    if q is None or k is None:
        return None
    heads = {**{s: (n, "q") for s, n in q.items()}, **{s: (n, "k") for s, n in k.items()}}
    spans = sorted(heads.items())
    if len(heads) != len(q) + len(k) or any(s + n > t for (s, (n, _)), (t, _) in itertools.pairwise(spans)):
        return None  # a row feeds two heads
    pieces: list[Segment] = []
    row = 0
    while row < n_rows:
        size, label = heads.get(row, (1, "v" if row in targets.value_rows else ""))
        if row + size > n_rows:
            return None
        last = pieces[-1] if pieces else None
        if last is not None and last.block == size and last.label == label:
            pieces[-1] = Segment(last.length + size, size, label)
        else:
            pieces.append(Segment(size, size, label))
        row += size
    kinds = {s.label for s in pieces}
    if kinds <= {""}:
        return None  # not attention
    segments, repeat = _periodic(pieces)
    if len(segments) == 1 and repeat == 1:
        seg = segments[0]
        role = {"q": "query", "k": "key", "v": "value"}.get(seg.label, "linear")
        return role, BlockLayout.rows(axis, group=seg.block)
    return "qkv", BlockLayout.segmented(segments, axis=axis, repeat=repeat)


def decide(
    uses: list[Use],
    shape: tuple[int, ...],
    sites: list[AttentionSite],
    fed: set[fx.Node],
    output: fx.Node,
) -> Decision | None:
    """The role and layout the uses imply; ``None`` when the graph doesn't explain them."""
    kinds = {u.kind for u in uses}
    if not uses or "unknown" in kinds:
        return None
    if "embedding" in kinds and kinds <= {"embedding", "project"}:
        axes = {u.axis for u in uses}
        return (
            Decision("embedding", BlockLayout.rows(axes.pop()))
            if len(axes) == 1 and None not in axes
            else None
        )
    if kinds == {"scale"}:
        return Decision("norm", BlockLayout.tensor())
    if kinds == {"shift"}:
        return Decision("bias", BlockLayout.element())
    if kinds == {"conv"}:
        axes = {u.axis for u in uses}
        if len(axes) != 1 or None in axes:
            return None
        return Decision("conv", conv_layout(axes.pop()))
    if kinds != {"project"}:
        return None
    placements = {(u.axis, u.batch_axes) for u in uses}
    if len(placements) != 1 or None in next(iter(placements)):
        return None
    axis, batch = placements.pop()
    if batch:
        return Decision("expert", BlockLayout.rows(axis, batch_axes=batch))
    decisions = set()
    for use in uses:
        targets = trace_rows(use.node, use.out_dim, sites, output)
        found = projection_layout(targets, shape[axis], axis)
        if found is not None:
            decisions.add(found)
        elif targets.query_heads or targets.key_heads:
            return None  # heads that aren't runs of rows: can't express them
        elif targets.reaches_output:
            decisions.add(("output", BlockLayout.rows(axis)))
        elif use.input is not None and use.input in fed:
            decisions.add(("attn_out", BlockLayout.rows(axis)))
        else:
            decisions.add(("linear", BlockLayout.rows(axis)))
    if len(decisions) != 1:
        return None
    return Decision(*decisions.pop())


def graph_decisions(
    graph: fx.Graph, params: dict[fx.Node, str], shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, Decision | None], set[str]]:
    """Decisions for every parameter placeholder; also the names the graph never uses."""
    sites = attention_sites(graph)
    fed = attention_fed(sites)
    output = next(n for n in graph.nodes if n.op == "output")
    decisions: dict[str, Decision | None] = {}
    unused: set[str] = set()
    for node, name in params.items():
        if name not in shapes:
            continue
        uses = parameter_uses(node, len(shapes[name]))
        if not uses:
            unused.add(name)
            continue
        decisions[name] = decide(uses, shapes[name], sites, fed, output)
    return decisions, unused


__all__ = [
    "CONV_BLOCKS",
    "Decision",
    "Use",
    "conv_layout",
    "graph_decisions",
    "parameter_uses",
    "projection_layout",
]
