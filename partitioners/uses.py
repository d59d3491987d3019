"""How a forward consumes each parameter, seen through the views and slices it takes of it.

A parameter placeholder is followed through the views a forward takes of a weight (``t``, ``mT``,
``transpose``, ``permute``, ``select``/indexing of an expert, casts, unary maths) and the slices
that cut a packed weight into its projections (``split``, ``chunk``, ``slice``), keeping track of
which parameter axis each view axis is and which rows each slice holds. Each consuming op gives
one :class:`Use` (read by :mod:`.consumers`); :mod:`.graph_roles` turns the uses into a role and
a layout.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from torch import fx

from .consumers import Axis, Outer, Use, along, consumer_use, live_axes, whole_axis
from .features import FeatureReader, reshape_groups
from .ops import (
    IDENTITY_OPS,
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
    sequence = dim in live_axes(view.axes, shape) and dim != len(axes) - 1
    return [along("tokens", [view.axes[dim]]) if sequence else Use("token")]


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
                uses.append(Use("embedding", whole_axis(axes[looked_up])))  # W[ids]: a table
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
                use = consumer_use(node, user, pos, axes, shape, view.reparametrised, features)
                uses.append(_placed(use, view))
    return uses


def parameter_uses(
    placeholder: fx.Node, shape: tuple[int, ...], features: FeatureReader | None = None
) -> list[Use]:
    """Every consumer of a parameter, seen through the views and slices taken of it
    (``features``: a reader shared by the parameters of one graph)."""
    start = _View(placeholder, list(range(len(shape))), {})
    return _walk(start, shape, features or FeatureReader())
