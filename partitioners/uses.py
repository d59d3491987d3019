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
from dataclasses import dataclass, replace
from typing import Any, cast

from torch import fx

from .features import FeatureReader, reshape_groups
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
#: the ones that reparametrise it: ``-exp(p)`` added to a recurrent state is a decay rate, no bias
_REPARAMETRISING = _UNARY - {"neg", "abs", "clamp"}
#: ops that read only the dtype or shape of a tensor given after their first argument
_METADATA_READS = frozenset({"type_as", "to", "_to_copy", "expand_as", "view_as", "reshape_as"})


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

    ``kind``: embedding | project | conv | scale | shift | table | tokens | token | unknown.
    For projections, ``axis`` is the parameter axis indexing the op's outputs, ``batch_axes``
    the expert axes, ``node``/``out_dim`` the op output and its feature dimension, and ``rows``
    the slice of the parameter along ``axis`` the op reads (``None``: all of it). An expert axis
    picked by a routing index (``W[e]``) stays a batch axis; ``picks`` are the (axis, index)
    pairs of constant indices taken (``W[i]`` in a loop over experts, or a stacked weight's part); ``inner`` are further output axes
    (an einsum weight ``(D, H, HD)`` giving ``(..., H, HD)``: ``axis`` is H, ``inner`` HD).
    For tables (``table``: added along positions; ``tokens``: the activation input of a linear
    map or a norm), ``axis`` and ``batch_axes`` are the position axes (``None``: one token).
    """

    kind: str
    axis: int | None = None
    batch_axes: tuple[int | Outer, ...] = ()
    node: fx.Node | None = None
    out_dim: int = -1
    input: fx.Node | None = None
    rows: tuple[int, int] | None = None
    picks: tuple[tuple[int, int], ...] = ()
    inner: tuple[int, ...] = ()


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
    return _regridded(in_shape, out_shape, axes) if name in ("view", "reshape") else None


def _regridded(in_shape: tuple[int, ...], out_shape: tuple[int, ...], axes: list[Axis]) -> list[Axis] | None:
    """A table's position axis viewed as a grid ``(n, m)`` (size-1 axes added or dropped too),
    or a grid viewed back: the grid's outer axis is :class:`Outer`."""
    groups = reshape_groups(in_shape, out_shape)
    if groups is None:
        return None
    out: list[Axis] = [None] * len(out_shape)
    for group_in, group_out in groups:
        sources = [axes[i] for i in group_in]
        if len(group_in) == 1 and len(group_out) == 1:
            out[group_out[0]] = sources[0]
        elif len(group_in) == 1 and len(group_out) == 2 and isinstance(sources[0], int):
            out[group_out[0]] = Outer(sources[0], out_shape[group_out[1]])
            out[group_out[1]] = sources[0]
        elif (
            len(group_in) == 2
            and len(group_out) == 1
            and sources[0] == Outer(cast(int, sources[1]), in_shape[group_in[1]])
        ):
            out[group_out[0]] = sources[1]
        else:
            return None
    return out


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


def _looked_up_axis(node: fx.Node, ndim: int, features: FeatureReader) -> int | None:
    """The axis ``W[..., ids]`` reads a table along, if it is one: a single index tensor (after
    full slices) with two or more axes (positions per token), or fixed ids (an index buffer, ids
    computed from sizes: a relative-position table's lookup, LeViT's ``biases[:, idx]``). Expert
    weights are indexed by ids computed from the routing instead."""
    indices, out_shape = args_of(node)[1], shape_of(node)
    given = [i for i, index in enumerate(indices or ()) if index is not None]
    if out_shape is None or len(given) != 1 or given[0] != len(indices) - 1:
        return None
    ids = indices[given[0]]
    if not isinstance(ids, fx.Node):
        return None
    fixed = ids.op == "placeholder" or (len(out_shape) >= ndim and not features.is_activation(ids))
    return given[0] if len(out_shape) > ndim or fixed else None


def _einsum_use(
    node: fx.Node, index: int, axes: list[Axis], shape: tuple[int, ...], features: FeatureReader
) -> Use:
    """An einsum operand: its letters that reach the output through it alone are its output axes;
    the first of them in the output indexes the rows, the rest are ``inner`` axes. Contracted
    with weights only, it is the activation: a learned token set."""
    equation = args_of(node)[0].replace(" ", "")
    inputs, output = equation.split("->")
    subs = inputs.split(",")
    mine, others = subs[index], "".join(s for i, s in enumerate(subs) if i != index)
    operands = [o for i, o in enumerate(args_of(node)[1]) if i != index]
    if operands and all(isinstance(o, fx.Node) and features.is_weight(o) for o in operands):
        return _along("tokens", [axes[i] for i in _live(axes, shape) if mine[i] in output])
    outs = sorted((c for c in mine if c in output and c not in others), key=output.index)
    batch = tuple(a for a, c in zip(axes, mine) if c in output and c in others and a is not None)
    if not outs or "." in equation:
        return Use("unknown")
    inner = [_whole(axes[mine.index(c)]) for c in outs[1:]]
    if any(a is None for a in inner):
        return Use("unknown")
    return Use(
        "project",
        _whole(axes[mine.index(outs[0])]),
        batch,
        node,
        output.index(outs[0]),
        inner=tuple(cast(list[int], inner)),
    )


def _matmul_use(node: fx.Node, pos: int, axes: list[Axis], first: int, features: FeatureReader) -> Use:
    """``a @ b`` with the weight at ``pos`` (``first`` is the position of ``a``). Rows mixed by
    fixed weights (SigLIP2's table resized as ``interpolation @ W``) are a table's positions."""
    other = args_of(node)[first + 1 - (pos - first)]
    if (
        pos == first + 1
        and len(axes) >= 2
        and isinstance(other, fx.Node)
        and not (features.is_activation(other) or features.is_input(other))
    ):
        return _along("table", [axes[-2]])
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


def _along(kind: str, axes: Sequence[Axis]) -> Use:
    """A table use along the parameter axes ``axes`` (a flat axis viewed as a grid counts once)."""
    whole: list[int] = []
    for a in axes:
        a = a.axis if isinstance(a, Outer) else a
        if a is not None and a not in whole:
            whole.append(a)
    if not whole:
        return Use(kind)
    return Use(kind, whole[0], tuple(whole[1:]))


def _live(axes: list[Axis], shape: tuple[int, ...]) -> list[int]:
    """The view axes that hold more than one element of the parameter."""
    return [i for i, a in enumerate(axes) if isinstance(a, Outer) or (a is not None and shape[a] > 1)]


def _off_features(user: fx.Node, node: fx.Node, live: list[int], features: FeatureReader) -> list[int] | None:
    """The weight view's ``live`` axes that don't line up with a feature axis of the activation
    it meets (``None``: that activation's features are unknown)."""
    other = next((a for a in args_of(user) if isinstance(a, fx.Node) and a is not node), None)
    view, other_shape = shape_of(node), shape_of(other)
    if other is None or view is None or other_shape is None:
        return None
    found = features(other)
    if found is None:
        return None
    shift = len(other_shape) - len(view)
    return [i for i in live if i + shift not in found]


def _elementwise_use(
    user: fx.Node,
    node: fx.Node,
    axes: list[Axis],
    shape: tuple[int, ...],
    view: _View,
    features: FeatureReader,
) -> Use:
    """A weight view multiplied with or added to an activation: along the activation's feature
    axes only, a bias or a scale; along its positions, a table."""
    live = _live(axes, shape)
    adds = op_name(user).rstrip("_") in ("add", "sub")
    off = _off_features(user, node, live, features) if len(live) > 1 else []
    if off == []:  # one axis, or only feature axes: a bias or a scale
        if adds and view.reparametrised:
            return Use("unknown")  # -exp(p) added to a state: a decay rate, no bias
        return Use("shift") if adds else Use("scale")
    if not adds:
        return Use("unknown")
    other = next((a for a in args_of(user) if isinstance(a, fx.Node) and a is not node), None)
    if other is not None and _from_batched_projection(other):
        return Use("shift")  # a per-expert bias (n_experts, out)
    # a position table: one block per position (all live axes but the features; unknown
    # features: all but the last live axis)
    positions = live[:-1] if off is None else off
    use = _along("table", [axes[i] for i in positions])
    return use if use.axis is not None else Use("unknown")


def _norm_input(user: fx.Node) -> bool:
    """``user`` normalises its input over trailing axes (layer norm, RMS norm)."""
    return "layer_norm" in op_name(user) or "rms_norm" in op_name(user)


def _conv_use(user: fx.Node, axes: list[Axis], shape: tuple[int, ...]) -> Use:
    """A convolution's weight; a kernel-1 one is also read as a projection of its channels."""
    args = args_of(user)
    transposed = op_name(user).startswith("conv_transpose") or (
        op_name(user) in ("convolution", "_convolution") and len(args) > 6 and bool(args[6])
    )
    if transposed or axes != list(range(len(shape))) or any(s != 1 for s in shape[2:]):
        return Use("conv")
    return Use("conv", 0, (), user, 1, args[0] if isinstance(args[0], fx.Node) else None)


def _consumer_use(
    node: fx.Node,
    user: fx.Node,
    pos: int,
    axes: list[Axis],
    shape: tuple[int, ...],
    view: _View,
    features: FeatureReader,
) -> Use:
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
        if pos == 0:  # the activation: a learned token set, one block per token
            return _along("tokens", [axes[i] for i in _live(axes, shape) if i != len(axes) - 1])
        return Use("shift")
    if name in ("mm", "matmul", "bmm"):
        return _matmul_use(user, pos, axes, 0, features)
    if name in ("addmm", "baddbmm", "addbmm"):
        return Use("shift") if pos == 0 else _matmul_use(user, pos, axes, 1, features)
    if name == "einsum":
        return _einsum_use(user, pos - 1, axes, shape, features) if pos >= 1 else Use("unknown")
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
        return Use("shift") if pos == 2 else _conv_use(user, axes, shape) if pos == 1 else Use("unknown")
    if name in NORM_OPS:
        weight, bias = NORM_OPS[name]
        if pos == 0 and _norm_input(user):  # normalised over its trailing axes: tokens before them
            normed = len(args_of(user)[1]) if len(args_of(user)) > 1 else 1
            return _along("tokens", [axes[i] for i in _live(axes, shape) if i < len(axes) - normed])
        return Use("scale") if pos == weight else Use("shift") if pos == bias else Use("unknown")
    if name.rstrip("_") in ("mul", "div", "add", "sub"):
        return _elementwise_use(user, node, axes, shape, view, features)
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


@dataclass(frozen=True)
class _View:
    """A view of a weight on the way to its consumers."""

    node: fx.Node
    #: the parameter axis each of its axes is
    axes: list[Axis]
    #: the rows each slice on the way holds, per parameter axis
    windows: dict[int, tuple[int, int]]
    #: expert axes a routing index picked
    picked: tuple[int | Outer, ...] = ()
    #: (axis, index) of each constant index taken (``W[i]``)
    picks: tuple[tuple[int, int], ...] = ()
    #: passed through a reparametrising map (``exp``, ``softplus``...)
    reparametrised: bool = False


def _picked(user: fx.Node, axes: list[Axis], moved: list[Axis]) -> tuple[int | Outer, ...]:
    """The expert axis ``W[e]`` drops: an ``index`` by a routing tensor that removes axis 0."""
    first = axes[0] if axes else None
    if op_name(user) == "index" and len(moved) == len(axes) - 1 and first is not None:
        return (first,)
    return ()


def _pick(user: fx.Node, axes: list[Axis]) -> tuple[tuple[int, int], ...]:
    """``W[i]`` with a constant ``i`` (a Python loop over experts): the (axis, index) taken."""
    args = args_of(user)
    if op_name(user) != "select" or not isinstance(args[2], int):
        return ()
    axis = axes[args[1] % len(axes)]
    return ((axis, args[2]),) if isinstance(axis, int) else ()


def _placed(use: Use, view: _View) -> Use:
    """``use`` with the rows its slice holds and the expert axes picked on the way to it. A
    split axis the op itself batches over (a weight viewed per head, no expert picked) is no
    expert axis: that use stays unexplained, as before the split was read."""
    if any(isinstance(b, Outer) for b in use.batch_axes):
        return Use("unknown")
    if use.kind == "project" and (view.picked or view.picks):
        use = replace(use, batch_axes=use.batch_axes + view.picked, picks=view.picks)
    if use.kind in ("project", "conv") and use.axis is not None and use.axis in view.windows:
        use = replace(use, rows=view.windows[use.axis])
    return use


def _reassembles(user: fx.Node, view: _View, dim: int, shape: tuple[int, ...]) -> bool:
    """``cat`` puts this slice of the parameter back where it was along its axis ``dim``: the
    concatenation is the parameter there again."""
    axis, pieces, out = view.axes[dim], args_of(user)[0], shape_of(user)
    if not isinstance(axis, int) or out is None or out[dim] != shape[axis]:
        return False
    sizes = [shape_of(p) for p in pieces]
    if view.node not in pieces or any(s is None for s in sizes):
        return False
    offset = sum(cast(tuple[int, ...], s)[dim] for s in sizes[: pieces.index(view.node)])
    return view.windows.get(axis, (0, shape[axis]))[0] == offset


def _concatenated(user: fx.Node, view: _View, shape: tuple[int, ...], features: FeatureReader) -> list[Use]:
    """A weight concatenated with other tensors: the projections the concatenation feeds along
    the weight's own axes (MobileBERT's ``h @ cat([E.t(), W], 0)``), else tokens put along the
    concatenated axis (one block per token; a class token, sink logits: one block)."""
    dim = args_of(user)[1] if len(args_of(user)) > 1 else 0
    axes = list(view.axes)
    if not isinstance(dim, int) or not axes:
        return [Use("token")]
    dim %= len(axes)
    if _reassembles(user, view, dim, shape):  # a table's slices put back in order (BEiT)
        windows = {a: w for a, w in view.windows.items() if a != axes[dim]}
        return _walk(replace(view, node=user, windows=windows), shape, features)
    axes[dim] = None
    found = _walk(replace(view, node=user, axes=axes, windows={}), shape, features)
    if found and all(u.kind == "project" and u.axis is not None for u in found):
        return found
    # tokens put before the sequence (registers): one block per token; a single one, sink
    # logits after the scores (the last axis): one block
    along = dim in _live(view.axes, shape) and dim != len(axes) - 1
    return [_along("tokens", [view.axes[dim]]) if along else Use("token")]


def _walk(start: _View, shape: tuple[int, ...], features: FeatureReader) -> list[Use]:
    """The uses of every consumer reached from ``start`` (a view of a parameter shaped
    ``shape``) through views and slices."""
    uses: list[Use] = []
    stack = [start]
    while stack:
        view = stack.pop()
        node, axes = view.node, view.axes
        for user in node.users:
            name = op_name(user)
            if name == "_assert_tensor_metadata":
                continue
            pos = _position(user, node)
            others = [a for a in args_of(user) if isinstance(a, fx.Node) and a is not node]
            if name in _METADATA_READS and pos >= 1:
                continue  # x.type_as(w): only its dtype is read
            if name == "_weight_norm":  # g * v / |v|: v is the weight, g scales it
                uses.extend([Use("scale")] if pos == 1 else [])
                if pos == 0:
                    stack.append(replace(view, node=user))
            elif (
                name in IDENTITY_OPS
                or name in ("contiguous", "clone")
                or (name in SCALAR_ARITH | _UNARY and not others)
            ):
                changed = view.reparametrised or name in _REPARAMETRISING
                stack.append(replace(view, node=user, reparametrised=changed))
            elif "upsample" in name and pos == 0:  # a table resized along its positions
                stack.append(replace(view, node=user))
            elif name in WEIGHT_SLICES and pos == 0:
                pieces = _slices(user, axes, view.windows)
                if pieces is None:
                    uses.append(Use("unknown"))
                else:
                    stack.extend(replace(view, node=n, axes=a, windows=w) for n, a, w in pieces)
            elif (
                name == "index"
                and pos == 0
                and (looked_up := _looked_up_axis(user, len(axes), features)) is not None
            ):
                uses.append(Use("embedding", _whole(axes[looked_up])))  # W[ids]: a table
            elif name in WEIGHT_VIEWS and pos == 0:
                moved = _view_axes(user, axes)
                if moved is None:
                    uses.append(Use("unknown"))
                else:
                    picked = view.picked + _picked(user, axes, moved)
                    stack.append(
                        replace(
                            view, node=user, axes=moved, picked=picked, picks=view.picks + _pick(user, axes)
                        )
                    )
            elif pos < 0:  # inside a list argument: cat (a token, sink logits, a stacked head), index
                uses.extend(_concatenated(user, view, shape, features) if name == "cat" else [Use("unknown")])
            else:
                use = _consumer_use(node, user, pos, axes, shape, view, features)
                uses.append(_placed(use, view))
    return uses


def parameter_uses(
    placeholder: fx.Node, shape: tuple[int, ...], features: FeatureReader | None = None
) -> list[Use]:
    """Every consumer of a parameter, seen through the views and slices taken of it
    (``features``: a reader shared by the parameters of one graph)."""
    start = _View(placeholder, list(range(len(shape))), {})
    return _walk(start, shape, features or FeatureReader())
