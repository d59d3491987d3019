"""What one op consuming a weight view makes of it: a projection, a table, a bias, a scale...

:mod:`.uses` follows a parameter through the views and slices taken of it; at each consuming op
:func:`consumer_use` reads the op (which argument the weight is, which of its axes index the
op's outputs, what the activation it meets is) into one :class:`Use`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from torch import fx

from .features import FeatureReader
from .ops import (
    BATCHED_PROJECTION_OPS,
    CONV_OPS,
    EMBEDDING_OPS,
    IDENTITY_OPS,
    NORM_OPS,
    WEIGHT_VIEWS,
    args_of,
    op_name,
    shape_of,
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


def whole_axis(axis: Axis) -> int | None:
    """The parameter axis a view axis is, if it is a whole one (outputs along an expert axis
    are no projection this reader knows)."""
    return axis if isinstance(axis, int) else None


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
        return along("tokens", [axes[i] for i in live_axes(axes, shape) if mine[i] in output])
    outs = sorted((c for c in mine if c in output and c not in others), key=output.index)
    batch = tuple(a for a, c in zip(axes, mine) if c in output and c in others and a is not None)
    if not outs or "." in equation:
        return Use("unknown")
    inner = [whole_axis(axes[mine.index(c)]) for c in outs[1:]]
    if any(a is None for a in inner):
        return Use("unknown")
    return Use(
        "project",
        whole_axis(axes[mine.index(outs[0])]),
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
        return along("table", [axes[-2]])
    if pos == first + 1:  # x @ W: outputs along W's last axis
        axis, out_dim = axes[-1], -1
    else:  # W @ x: outputs along W's rows
        axis, out_dim = axes[-2] if len(axes) >= 2 else None, -2
    batch = tuple(a for a in axes[:-2] if a is not None)
    return Use(
        "project", whole_axis(axis), batch, node, out_dim, other if isinstance(other, fx.Node) else None
    )


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


def along(kind: str, axes: Sequence[Axis]) -> Use:
    """A table use along the parameter axes ``axes`` (a flat axis viewed as a grid counts once)."""
    whole: list[int] = []
    for a in axes:
        a = a.axis if isinstance(a, Outer) else a
        if a is not None and a not in whole:
            whole.append(a)
    if not whole:
        return Use(kind)
    return Use(kind, whole[0], tuple(whole[1:]))


def live_axes(axes: list[Axis], shape: tuple[int, ...]) -> list[int]:
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
    reparametrised: bool,
    features: FeatureReader,
) -> Use:
    """A weight view multiplied with or added to an activation: along the activation's feature
    axes only, a bias or a scale; along its positions, a table."""
    live = live_axes(axes, shape)
    adds = op_name(user).rstrip("_") in ("add", "sub")
    off = _off_features(user, node, live, features) if len(live) > 1 else []
    if off == []:  # one axis, or only feature axes: a bias or a scale
        if adds and reparametrised:
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
    use = along("table", [axes[i] for i in positions])
    return use if use.axis is not None else Use("unknown")


def _norm_input(user: fx.Node) -> bool:
    """``user`` normalises its input over trailing axes (layer norm, RMS norm)."""
    return "layer_norm" in op_name(user) or "rms_norm" in op_name(user)


def _conv_use(user: fx.Node, axes: list[Axis], shape: tuple[int, ...]) -> Use:
    """A convolution's weight; a kernel-1 one is also read as a projection of its channels."""
    args = cast(Sequence[Any], args_of(user))  # not a tuple: len() checks must not narrow it
    transposed = op_name(user).startswith("conv_transpose") or (
        op_name(user) in ("convolution", "_convolution") and len(args) > 6 and bool(args[6])
    )
    if transposed or axes != list(range(len(shape))) or any(s != 1 for s in shape[2:]):
        return Use("conv")
    return Use("conv", 0, (), user, 1, args[0] if isinstance(args[0], fx.Node) else None)


def consumer_use(
    node: fx.Node,
    user: fx.Node,
    pos: int,
    axes: list[Axis],
    shape: tuple[int, ...],
    reparametrised: bool,
    features: FeatureReader,
) -> Use:
    """The use ``user`` makes of ``node``, a view of a parameter shaped ``shape`` at argument
    ``pos`` (``reparametrised``: through ``exp``, ``softplus``...)."""
    name = op_name(user)
    if name in EMBEDDING_OPS:
        return Use("embedding", whole_axis(axes[0])) if pos == 0 else Use("unknown")
    if name == "linear":
        if pos == 1:
            return Use(
                "project",
                whole_axis(axes[0]),
                tuple(a for a in axes[1:-1] if a is not None),
                user,
                -1,
                args_of(user)[0],
            )
        if pos == 0:  # the activation: a learned token set, one block per token
            return along("tokens", [axes[i] for i in live_axes(axes, shape) if i != len(axes) - 1])
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
                whole_axis(axes[-1]),
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
            return along("tokens", [axes[i] for i in live_axes(axes, shape) if i < len(axes) - normed])
        return Use("scale") if pos == weight else Use("shift") if pos == bias else Use("unknown")
    if name.rstrip("_") in ("mul", "div", "add", "sub"):
        return _elementwise_use(user, node, axes, shape, reparametrised, features)
    if name in ("where", "masked_scatter"):  # a learned token put where a mask says
        return Use("token")
    return Use("unknown")
