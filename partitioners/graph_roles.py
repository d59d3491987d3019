"""Roles and layouts of parameters, read from the operators that consume them.

Each parameter placeholder is followed through the views a forward takes of a weight (``t``,
``mT``, ``transpose``, ``permute``, ``select``/indexing of an expert, casts, unary maths) and the
slices that cut a packed weight into its projections (``split``, ``chunk``, ``slice``), keeping
track of which parameter axis each view axis is and which rows each slice holds. The consuming op
then says what the parameter is:

* ``embedding``                               -> table, rows along its dim 0
* ``linear``/``mm``/``matmul``/``bmm``/``einsum``/grouped mm -> projection; its output-neuron axis
  is the axis that indexes the op's outputs (dim 1 for ``x @ W``); a weight with an expert axis
  is an expert weight
* ``convolution``                             -> conv
* norm weight, or a factor with one non-1 axis -> norm scale;  norm/linear/conv bias, or an addend
  with one non-1 axis (or an expert axis after a batched matmul) -> bias
* an addend indexed along a sequence axis     -> position table, one block per row
* a single value, or a tensor concatenated to a sequence (class token, sink logits) -> one block

Projections are then followed with :func:`~partitioners.row_flow.trace_rows` to attention inputs
(query/key heads, value rows) and to the model output (output head); a projection fed by an
attention output is the attention output projection.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass

from torch import fx

from .attention import AttentionSite, attention_sites
from .layout import BlockLayout, Segment
from .ops import (
    BATCHED_PROJECTION_OPS,
    CONV_OPS,
    EMBEDDING_OPS,
    IDENTITY_OPS,
    NORM_OPS,
    SCALAR_ARITH,
    WEIGHT_SLICES,
    WEIGHT_VIEWS,
    op_name,
    shape_of,
)
from .plan import CONV_LAYOUT, Decision
from .row_flow import RowTargets, attention_fed, trace_rows

#: elementwise maths on a weight that keep its axes (a learned scalar's ``exp``, a gate's ``tanh``)
_UNARY = frozenset(
    {"tanh", "sigmoid", "exp", "softplus", "neg", "abs", "log", "sqrt", "rsqrt", "pow", "clamp"}
)
_Window = tuple[int, int, int]  # (parameter axis, first row, end row) of a slice


@dataclass(frozen=True)
class Use:
    """How one op consumes a parameter.

    ``kind``: embedding | project | conv | scale | shift | table | token | unknown. For
    projections and tables, ``axis`` is the parameter axis indexing the op's outputs,
    ``batch_axes`` the expert axes, ``node``/``out_dim`` the op output and its feature dimension,
    and ``rows`` the slice of the parameter along ``axis`` the op reads (``None``: all of it).
    """

    kind: str
    axis: int | None = None
    batch_axes: tuple[int, ...] = ()
    node: fx.Node | None = None
    out_dim: int = -1
    input: fx.Node | None = None
    rows: tuple[int, int] | None = None


# ---- following a weight to its consumers -----------------------------------------------------
def _view_axes(node: fx.Node, axes: list[int | None]) -> list[int | None] | None:
    """Which parameter axis each axis of ``node`` (a view of a tensor with ``axes``) is."""
    name, args = op_name(node), node.args
    nd = len(axes)
    if name in ("t", "numpy_T"):
        return axes[::-1]
    if name == "mT":
        return [*axes[:-2], axes[-1], axes[-2]]
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
    if name in ("expand", "repeat"):  # new leading axes; a tiled axis is no longer one row
        new = len(out_shape) - nd
        return [None] * new + [a if out_shape[new + i] == in_shape[i] else None for i, a in enumerate(axes)]
    # unsqueeze / squeeze / view that only adds or drops size-1 axes
    if [s for s in out_shape if s != 1] == [s for s in in_shape if s != 1]:
        kept = iter(a for a, s in zip(axes, in_shape) if s != 1)
        return [None if s == 1 else next(kept) for s in out_shape]
    return None


def _slices(node: fx.Node, axes: list[int | None], windows: dict[int, tuple[int, int]]):
    """For a slicing op on a weight view: (output node, axes, windows) of each piece, or ``None``."""
    name, args = op_name(node), node.args
    nd = len(axes)
    in_shape = shape_of(args[0])
    if in_shape is None:
        return None
    if name in ("slice", "narrow"):
        dim = args[1] % nd if len(args) > 1 else 0
        size = in_shape[dim]
        if name == "narrow":
            start, stop = args[2], args[2] + args[3]
        else:
            start = args[2] if len(args) > 2 and args[2] is not None else 0
            stop = args[3] if len(args) > 3 and args[3] is not None else size
            if len(args) > 4 and args[4] != 1:
                return None
        if not all(isinstance(v, int) for v in (start, stop)):
            return None
        start, stop = (max(0, min(size, v if v >= 0 else v + size)) for v in (start, stop))
        pieces = [(node, start, stop, axes)]
    else:  # split / split_with_sizes / chunk / unbind: a list, read by getitem
        dim = (args[2] if name in ("split", "split_with_sizes") and len(args) > 2 else 0) % nd
        if name == "chunk":
            dim = (args[2] if len(args) > 2 else 0) % nd
        if name == "unbind":
            dim = (args[1] if len(args) > 1 else 0) % nd
        vals = node.meta.get("val")
        if not isinstance(vals, (list, tuple)):
            return None
        sizes = [1 if name == "unbind" else int(v.shape[dim]) for v in vals]
        starts = [0, *itertools.accumulate(sizes)]
        kept = [a for i, a in enumerate(axes) if i != dim] if name == "unbind" else axes
        pieces = []
        for user in node.users:
            if op_name(user) == "getitem" and isinstance(user.args[1], int):
                i = user.args[1]
                pieces.append((user, starts[i], starts[i + 1], kept))
    out = []
    axis = axes[dim]
    for piece, start, stop, piece_axes in pieces:
        new = dict(windows)
        if axis is not None:
            first = new.get(axis, (0, 0))[0]
            new[axis] = (first + start, first + stop)
        out.append((piece, piece_axes, new))
    return out


def _looks_up_rows(node: fx.Node, ndim: int) -> bool:
    """``W[ids]`` with an id tensor of two or more axes on axis 0 (a position lookup)."""
    indices, out_shape = node.args[1], shape_of(node)
    return (
        out_shape is not None
        and len(indices) >= 1
        and isinstance(indices[0], fx.Node)
        and all(i is None for i in indices[1:])
        and len(out_shape) > ndim
    )


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


def _from_batched_projection(node: fx.Node) -> bool:
    """``node`` is (a view of) the output of a matmul with an expert axis."""
    for _ in range(6):
        name = op_name(node)
        if name in BATCHED_PROJECTION_OPS or "grouped_mm" in name:
            return True
        if not (name in WEIGHT_VIEWS or name in IDENTITY_OPS) or not isinstance(node.args[0], fx.Node):
            return False
        node = node.args[0]
    return False


def _elementwise_use(user: fx.Node, node: fx.Node, axes: list[int | None], shape: tuple[int, ...]) -> Use:
    """A weight view multiplied with or added to an activation."""
    live = [(i, a) for i, a in enumerate(axes) if a is not None and shape[a] > 1]
    name = op_name(user).rstrip("_")
    if len(live) <= 1:  # broadcast over everything but one axis: a scale or a bias
        return Use("scale") if name in ("mul", "div") else Use("shift")
    if name not in ("add", "sub"):
        return Use("unknown")
    other = next((a for a in user.args if isinstance(a, fx.Node) and a is not node), None)
    if other is not None and _from_batched_projection(other):
        return Use("shift")  # a per-expert bias (n_experts, out)
    return Use("table", live[0][1])  # a position table: rows along its first non-feature axis


def _consumer_use(
    node: fx.Node, user: fx.Node, pos: int, axes: list[int | None], shape: tuple[int, ...]
) -> Use:
    name = op_name(user)
    if name in EMBEDDING_OPS:
        return Use("embedding", axes[0]) if pos == 0 else Use("unknown")
    if name == "linear":
        if pos == 1:
            return Use(
                "project", axes[0], tuple(a for a in axes[1:-1] if a is not None), user, -1, user.args[0]
            )
        return Use("shift")
    if name in ("mm", "matmul", "bmm"):
        return _matmul_use(user, pos, axes, 0)
    if name in ("addmm", "baddbmm", "addbmm"):
        return Use("shift") if pos == 0 else _matmul_use(user, pos, axes, 1)
    if name == "einsum":
        return _einsum_use(user, pos - 1, axes) if pos >= 1 else Use("unknown")
    if "grouped_mm" in name:
        if pos == 1:
            return Use(
                "project", axes[-1], tuple(a for a in axes[:1] if a is not None), user, -1, user.args[0]
            )
        return Use("unknown")
    if name in CONV_OPS:
        return Use("shift") if pos == 2 else Use("conv") if pos == 1 else Use("unknown")
    if name in NORM_OPS:
        weight, bias = NORM_OPS[name]
        return Use("scale") if pos == weight else Use("shift") if pos == bias else Use("unknown")
    if name.rstrip("_") in ("mul", "div", "add", "sub"):
        return _elementwise_use(user, node, axes, shape)
    if name in ("where", "masked_scatter"):  # a learned token put where a mask says
        return Use("token")
    return Use("unknown")


def _position(user: fx.Node, node: fx.Node) -> int:
    """Where ``node`` is among ``user``'s arguments; einsum operands count from 1; -1 if nested."""
    if node in user.args:
        return user.args.index(node)
    if op_name(user) == "einsum" and node in user.args[1]:
        return 1 + list(user.args[1]).index(node)
    return -1


def parameter_uses(placeholder: fx.Node, shape: tuple[int, ...]) -> list[Use]:
    """Every consumer of a parameter, seen through the views and slices taken of it."""
    uses: list[Use] = []
    Item = tuple[fx.Node, list[int | None], dict[int, tuple[int, int]]]
    stack: list[Item] = [(placeholder, list(range(len(shape))), {})]
    while stack:
        node, axes, windows = stack.pop()
        for user in node.users:
            name = op_name(user)
            if name == "_assert_tensor_metadata":
                continue
            pos = _position(user, node)
            others = [a for a in user.args if isinstance(a, fx.Node) and a is not node]
            if (
                name in IDENTITY_OPS
                or name in ("contiguous", "clone")
                or (name in SCALAR_ARITH | _UNARY and not others)
            ):
                stack.append((user, axes, windows))
            elif name in WEIGHT_SLICES and pos == 0:
                pieces = _slices(user, axes, windows)
                if pieces is None:
                    uses.append(Use("unknown"))
                else:
                    stack.extend(pieces)
            elif name == "index" and pos == 0 and _looks_up_rows(user, len(axes)):
                uses.append(Use("embedding", axes[0]))  # W[ids] with ids of any shape: a table
            elif name in WEIGHT_VIEWS and pos == 0:
                moved = _view_axes(user, axes)
                if moved is None:
                    uses.append(Use("unknown"))
                else:
                    stack.append((user, moved, windows))
            elif pos < 0:  # inside a list argument: cat (a token, sink logits), index
                uses.append(Use("token" if name == "cat" else "unknown"))
            else:
                use = _consumer_use(node, user, pos, axes, shape)
                if use.axis is not None and use.axis in windows:
                    use = Use(**{**use.__dict__, "rows": windows[use.axis]})
                uses.append(use)
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


def _merge_runs(pieces: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for seg in pieces:
        last = out[-1] if out else None
        if last is not None and last.block == seg.block and last.label == seg.label:
            out[-1] = Segment(last.length + seg.length, seg.block, seg.label)
        else:
            out.append(seg)
    return out


_LABELS = {"query": "q", "key": "k", "value": "v"}
_ROLES = {v: k for k, v in _LABELS.items()}


def _segments_layout(pieces: list[Segment], axis: int) -> Decision:
    """One layout for row segments: one role when all segments agree, else fused ``qkv``."""
    segments, repeat = _periodic(_merge_runs(pieces))
    if len(segments) == 1 and repeat == 1:
        seg = segments[0]
        return Decision(_ROLES.get(seg.label, "linear"), BlockLayout.rows(axis, group=seg.block))
    return Decision("qkv", BlockLayout.segmented(segments, axis=axis, repeat=repeat))


def projection_layout(targets: RowTargets, n_rows: int, axis: int) -> Decision | None:
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
        pieces.append(Segment(size, size, label))
        row += size
    if {s.label for s in pieces} <= {""}:
        return None  # not attention
    return _segments_layout(pieces, axis)


@dataclass
class GraphContext:
    """What every projection's decision looks up: attention sites, their outputs, the output."""

    sites: list[AttentionSite]
    fed: set[fx.Node]
    output: fx.Node
    #: the graph's output is the model's (a submodule's output is no output head)
    whole_model: bool = True
    #: set when a projection fed a query or key whose heads aren't runs of its rows
    heads_unread: bool = False


def _projection(use: Use, n_rows: int, axis: int, ctx: GraphContext) -> Decision | None:
    targets = (
        trace_rows(use.node, use.out_dim, ctx.sites, ctx.output) if use.node is not None else RowTargets()
    )
    found = projection_layout(targets, n_rows, axis)
    if found is not None:
        return found
    if targets.query_heads or targets.key_heads:
        ctx.heads_unread = True  # heads that aren't runs of rows: can't express them
        return None
    if targets.reaches_output and ctx.whole_model:
        return Decision("output", BlockLayout.rows(axis))
    if use.input is not None and use.input in ctx.fed:
        return Decision("attn_out", BlockLayout.rows(axis))
    return Decision("linear", BlockLayout.rows(axis))


def _as_segments(decision: Decision, n_rows: int) -> list[Segment]:
    layout = decision.layout
    if layout.segments:
        return list(layout.segments) * layout.repeat
    return [Segment(n_rows, layout.group, _LABELS.get(decision.role, ""))]


def _projections(uses: list[Use], shape: tuple[int, ...], ctx: GraphContext) -> Decision | None:
    """A weight read by projections, whole or in row slices (a packed ``in_proj`` split)."""
    placements = {(u.axis, u.batch_axes) for u in uses}
    if len(placements) != 1 or None in next(iter(placements)):
        return None
    axis, batch = placements.pop()
    if batch:
        return Decision("expert", BlockLayout.rows(axis, batch_axes=batch))
    by_rows: dict[tuple[int, int], set[Decision]] = defaultdict(set)
    for use in uses:
        start, stop = use.rows or (0, shape[axis])
        decision = _projection(use, stop - start, axis, ctx)
        if decision is None:
            return None
        by_rows[(start, stop)].add(decision)
    if any(len(found) != 1 for found in by_rows.values()):
        return None
    if len(by_rows) == 1 and next(iter(by_rows)) == (0, shape[axis]):
        return next(iter(by_rows[(0, shape[axis])]))
    pieces, row = [], 0
    for (start, stop), found in sorted(by_rows.items()):
        if start != row:
            return None  # slices that overlap or leave rows out
        pieces += _as_segments(next(iter(found)), stop - start)
        row = stop
    return _segments_layout(pieces, axis) if row == shape[axis] else None


def decide(uses: list[Use], shape: tuple[int, ...], ctx: GraphContext) -> Decision | None:
    """The role and layout the uses imply; ``None`` when the graph doesn't explain them."""
    kinds = {u.kind for u in uses}
    if not uses:
        return None
    if math.prod(shape) == 1:
        return Decision("scalar", BlockLayout.tensor())
    if "unknown" in kinds:
        return None
    if "embedding" in kinds and kinds <= {"embedding", "project"}:
        axes = {u.axis for u in uses}
        return (
            Decision("embedding", BlockLayout.rows(axes.pop()))
            if len(axes) == 1 and None not in axes
            else None
        )
    if kinds == {"table"}:
        axes = {u.axis for u in uses}
        return Decision("position", BlockLayout.rows(axes.pop())) if len(axes) == 1 else None
    if kinds == {"token"}:
        return Decision("token", BlockLayout.tensor())
    if kinds == {"scale"}:
        return Decision("norm", BlockLayout.tensor())
    if kinds == {"shift"}:
        return Decision("bias", BlockLayout.element())
    if kinds == {"conv"}:
        return Decision("conv", CONV_LAYOUT)
    if kinds != {"project"}:
        return None
    return _projections(uses, shape, ctx)


@dataclass
class GraphReading:
    """What the graph says about each parameter it uses."""

    #: name -> decision; ``None``: the graph uses it in a way it can't explain
    decisions: dict[str, Decision | None]
    #: names of projections that feed a query or key whose heads could not be read
    heads_unread: set[str]


def graph_decisions(
    graph: fx.Graph,
    params: dict[fx.Node, str],
    shapes: dict[str, tuple[int, ...]],
    whole_model: bool = True,
) -> GraphReading:
    """Decisions for every parameter the graph uses (``whole_model``: the graph's output is the
    model's, so a projection reaching it is the output head)."""
    sites = attention_sites(graph)
    output = next(n for n in graph.nodes if n.op == "output")
    ctx = GraphContext(sites, attention_fed(sites), output, whole_model)
    reading = GraphReading({}, set())
    for node, name in params.items():
        if name not in shapes:
            continue
        uses = parameter_uses(node, shapes[name])
        if uses:
            ctx.heads_unread = False
            reading.decisions[name] = decide(uses, shapes[name], ctx)
            if ctx.heads_unread:
                reading.heads_unread.add(name)
    return reading
