"""How a forward consumes each parameter, seen through the views and slices it takes of it.

A parameter placeholder is followed through the views a forward takes of a weight (``t``, ``mT``,
``transpose``, ``permute``, ``select``/indexing of an expert, casts, unary maths) and the slices
that cut a packed weight into its projections (``split``, ``chunk``, ``slice``), keeping track of
which parameter axis each view axis is and which rows each slice holds. Each consuming op gives
one :class:`Use`; :mod:`.graph_roles` turns the uses into a role and a layout.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from torch import fx

from .ops import (
    BATCHED_PROJECTION_OPS,
    CONV_OPS,
    EMBEDDING_OPS,
    IDENTITY_OPS,
    NORM_OPS,
    SCALAR_ARITH,
    WEIGHT_SLICES,
    WEIGHT_VIEWS,
    args_of,
    op_name,
    shape_of,
)

#: elementwise maths on a weight that keep its axes (a learned scalar's ``exp``, a gate's ``tanh``)
_UNARY = frozenset(
    {"tanh", "sigmoid", "exp", "softplus", "neg", "abs", "log", "sqrt", "rsqrt", "pow", "clamp"}
)


@dataclass(frozen=True)
class Outer:
    """The outer axis of parameter axis ``axis`` viewed as ``(n // inner, inner)``: the expert axis
    of experts stored flat (DBRX's ``w1.view(E, FF, D)``), ``inner`` rows per expert."""

    axis: int
    inner: int


#: which parameter axis an axis of a weight view is: a whole one, the outer part of one, or none
Axis = int | Outer | None


@dataclass(frozen=True)
class Use:
    """How one op consumes a parameter.

    ``kind``: embedding | project | conv | scale | shift | table | token | unknown. For
    projections and tables, ``axis`` is the parameter axis indexing the op's outputs,
    ``batch_axes`` the expert axes, ``node``/``out_dim`` the op output and its feature dimension,
    and ``rows`` the slice of the parameter along ``axis`` the op reads (``None``: all of it).
    An expert axis picked by a routing index (``W[e]``) stays a batch axis.
    """

    kind: str
    axis: int | None = None
    batch_axes: tuple[int | Outer, ...] = ()
    node: fx.Node | None = None
    out_dim: int = -1
    input: fx.Node | None = None
    rows: tuple[int, int] | None = None


# ---- following a weight to its consumers -----------------------------------------------------
def _view_axes(node: fx.Node, axes: list[Axis]) -> list[Axis] | None:
    """Which parameter axis each axis of ``node`` (a view of a tensor with ``axes``) is."""
    name, args = op_name(node), args_of(node)
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
    split = _split_axis(in_shape, out_shape)
    if split is not None:  # (E*FF, D) viewed (E, FF, D): experts stored flat
        i, inner = split
        a = axes[i]
        parts: list[Axis] = [Outer(a, inner), a] if isinstance(a, int) else [None, None]
        return [*axes[:i], *parts, *axes[i + 1 :]]
    if name in ("expand", "repeat"):  # new leading axes; a tiled axis is no longer one row
        new = len(out_shape) - nd
        return [None] * new + [a if out_shape[new + i] == in_shape[i] else None for i, a in enumerate(axes)]
    # unsqueeze / squeeze / view that only adds or drops size-1 axes
    if [s for s in out_shape if s != 1] == [s for s in in_shape if s != 1]:
        kept = iter(a for a, s in zip(axes, in_shape) if s != 1)
        return [None if s == 1 else next(kept) for s in out_shape]
    return None


def _whole(axis: Axis) -> int | None:
    """The parameter axis a view axis is, if it is a whole one (outputs along an expert axis
    are no projection this reader knows)."""
    return axis if isinstance(axis, int) else None


def _split_axis(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """``(i, inner)`` if ``out_shape`` is ``in_shape`` with axis ``i`` split into two axes, the
    inner one of ``inner``, both longer than 1."""
    if len(out_shape) != len(in_shape) + 1:
        return None
    for i, n in enumerate(in_shape):
        outer, inner = out_shape[i], out_shape[i + 1]
        kept = out_shape[:i] == in_shape[:i] and out_shape[i + 2 :] == in_shape[i + 1 :]
        if kept and outer > 1 and inner > 1 and outer * inner == n:
            return i, inner
    return None


def _slices(node: fx.Node, axes: list[Axis], windows: dict[int, tuple[int, int]]):
    """For a slicing op on a weight view: (output node, axes, windows) of each piece, or ``None``."""
    name = op_name(node)
    args = cast(Sequence[Any], args_of(node))  # not a tuple: len() checks must not narrow its length
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
            if op_name(user) == "getitem" and isinstance(args_of(user)[1], int):
                i = args_of(user)[1]
                pieces.append((user, starts[i], starts[i + 1], kept))
    out = []
    axis = axes[dim]
    for piece, start, stop, piece_axes in pieces:
        new = dict(windows)
        if isinstance(axis, int):
            first = new.get(axis, (0, 0))[0]
            new[axis] = (first + start, first + stop)
        out.append((piece, piece_axes, new))
    return out


def _looks_up_rows(node: fx.Node, ndim: int) -> bool:
    """``W[ids]`` on axis 0 that reads a table: ids with two or more axes (positions per token),
    or a fixed index buffer (a relative-position table's lookup pattern). Expert weights are
    indexed by ids computed from the routing instead."""
    indices, out_shape = args_of(node)[1], shape_of(node)
    if out_shape is None or not indices or not isinstance(indices[0], fx.Node):
        return False
    if any(i is not None for i in indices[1:]):
        return False
    return len(out_shape) > ndim or indices[0].op == "placeholder"


def _einsum_use(node: fx.Node, index: int, axes: list[Axis]) -> Use:
    equation = args_of(node)[0].replace(" ", "")
    inputs, output = equation.split("->")
    subs = inputs.split(",")
    mine, others = subs[index], "".join(s for i, s in enumerate(subs) if i != index)
    outs = [c for c in mine if c in output and c not in others]
    batch = tuple(a for a, c in zip(axes, mine) if c in output and c in others and a is not None)
    if len(outs) != 1 or "." in equation:
        return Use("unknown")
    return Use("project", _whole(axes[mine.index(outs[0])]), batch, node, output.index(outs[0]))


def _matmul_use(node: fx.Node, pos: int, axes: list[Axis], first: int) -> Use:
    """``a @ b`` with the weight at ``pos`` (``first`` is the position of ``a``)."""
    other = args_of(node)[first + 1 - (pos - first)]
    if pos == first + 1:  # x @ W: outputs along W's last axis
        axis, out_dim = axes[-1], -1
    else:  # W @ x: outputs along W's rows
        axis, out_dim = axes[-2] if len(axes) >= 2 else None, -2
    batch = tuple(a for a in axes[:-2] if a is not None)
    return Use("project", _whole(axis), batch, node, out_dim, other if isinstance(other, fx.Node) else None)


def _from_batched_projection(node: fx.Node) -> bool:
    """``node`` is (a view of) the output of a matmul with an expert axis."""
    for _ in range(6):
        name = op_name(node)
        if name in BATCHED_PROJECTION_OPS or "grouped_mm" in name:
            return True
        if not (name in WEIGHT_VIEWS or name in IDENTITY_OPS) or not isinstance(args_of(node)[0], fx.Node):
            return False
        node = args_of(node)[0]
    return False


def _elementwise_use(user: fx.Node, node: fx.Node, axes: list[Axis], shape: tuple[int, ...]) -> Use:
    """A weight view multiplied with or added to an activation."""
    live = [(i, a) for i, a in enumerate(axes) if isinstance(a, Outer) or (a is not None and shape[a] > 1)]
    name = op_name(user).rstrip("_")
    if len(live) <= 1:  # broadcast over everything but one axis: a scale or a bias
        return Use("scale") if name in ("mul", "div") else Use("shift")
    if name not in ("add", "sub"):
        return Use("unknown")
    other = next((a for a in args_of(user) if isinstance(a, fx.Node) and a is not node), None)
    if other is not None and _from_batched_projection(other):
        return Use("shift")  # a per-expert bias (n_experts, out)
    first = live[0][1]  # a position table: rows along its first non-feature axis
    return Use("table", first) if isinstance(first, int) else Use("unknown")


def _consumer_use(node: fx.Node, user: fx.Node, pos: int, axes: list[Axis], shape: tuple[int, ...]) -> Use:
    name = op_name(user)
    if name in EMBEDDING_OPS:
        return Use("embedding", _whole(axes[0])) if pos == 0 else Use("unknown")
    if name == "linear":
        if pos == 1:
            return Use(
                "project",
                _whole(axes[0]),
                tuple(a for a in axes[1:-1] if a is not None),
                user,
                -1,
                args_of(user)[0],
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
                "project",
                _whole(axes[-1]),
                tuple(a for a in axes[:1] if a is not None),
                user,
                -1,
                args_of(user)[0],
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
    if node in args_of(user):
        return args_of(user).index(node)
    if op_name(user) == "einsum" and node in args_of(user)[1]:
        return 1 + list(args_of(user)[1]).index(node)
    return -1


#: a weight view: its node, the parameter axis of each of its axes, the rows each slice holds,
#: the expert axes a routing index picked
_Item = tuple[fx.Node, list[Axis], dict[int, tuple[int, int]], tuple[int | Outer, ...]]


def _picked(user: fx.Node, axes: list[Axis], moved: list[Axis]) -> tuple[int | Outer, ...]:
    """The expert axis ``W[e]`` drops: an ``index`` by a routing tensor that removes axis 0."""
    first = axes[0] if axes else None
    if op_name(user) == "index" and len(moved) == len(axes) - 1 and first is not None:
        return (first,)
    return ()


def _placed(use: Use, windows: dict[int, tuple[int, int]], picked: tuple[int | Outer, ...]) -> Use:
    """``use`` with the rows its slice holds and the expert axes picked on the way to it. A
    split axis the op itself batches over (a weight viewed per head, no expert picked) is no
    expert axis: that use stays unexplained, as before the split was read."""
    if any(isinstance(b, Outer) for b in use.batch_axes):
        return Use("unknown")
    if use.kind == "project" and picked:
        use = Use(**{**use.__dict__, "batch_axes": use.batch_axes + picked})
    if use.axis is not None and use.axis in windows:
        use = Use(**{**use.__dict__, "rows": windows[use.axis]})
    return use


def parameter_uses(placeholder: fx.Node, shape: tuple[int, ...]) -> list[Use]:
    """Every consumer of a parameter, seen through the views and slices taken of it."""
    uses: list[Use] = []
    stack: list[_Item] = [(placeholder, list(range(len(shape))), {}, ())]
    while stack:
        node, axes, windows, picked = stack.pop()
        for user in node.users:
            name = op_name(user)
            if name == "_assert_tensor_metadata":
                continue
            pos = _position(user, node)
            others = [a for a in args_of(user) if isinstance(a, fx.Node) and a is not node]
            if (
                name in IDENTITY_OPS
                or name in ("contiguous", "clone")
                or (name in SCALAR_ARITH | _UNARY and not others)
            ):
                stack.append((user, axes, windows, picked))
            elif name in WEIGHT_SLICES and pos == 0:
                pieces = _slices(user, axes, windows)
                if pieces is None:
                    uses.append(Use("unknown"))
                else:
                    stack.extend((*piece, picked) for piece in pieces)
            elif name == "index" and pos == 0 and _looks_up_rows(user, len(axes)):
                uses.append(Use("embedding", _whole(axes[0])))  # W[ids] with ids of any shape: a table
            elif name in WEIGHT_VIEWS and pos == 0:
                moved = _view_axes(user, axes)
                if moved is None:
                    uses.append(Use("unknown"))
                else:
                    stack.append((user, moved, windows, picked + _picked(user, axes, moved)))
            elif pos < 0:  # inside a list argument: cat (a token, sink logits), index
                uses.append(Use("token" if name == "cat" else "unknown"))
            else:
                uses.append(_placed(_consumer_use(node, user, pos, axes, shape), windows, picked))
    return uses
