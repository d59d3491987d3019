"""Which axes of an activation index a projection's outputs: its *feature* axes.

A parameter added to or multiplied with an activation only along axes that index a projection's
outputs (a per-head bias ``(H, HD)`` on a query viewed ``(B, T, H, HD)``, a per-head norm scale)
acts per feature, like a bias or a norm scale. Along any other axis (tokens, grid positions) it is
a table read by position. The feature axes are read backwards from the activation through the ops
that produced it: a linear map's, an embedding's or an einsum weight's output axes, a
convolution's channel axis, carried through views, transposes and shape-keeping maths.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import fx

from .ops import CONTRACTION_OPS, CONV_OPS, EMBEDDING_OPS, args_of, is_tensor, op_name, shape_of

#: the feature axes of a node's output; ``None``: not known (an input, a creation op, an op the
#: reader doesn't follow)
Features = frozenset[int] | None

_LAST_AXIS = frozenset({"linear", "addmm", *EMBEDDING_OPS})
_MATMUL = CONTRACTION_OPS - {"einsum"}  # the plain matrix products
_PERMUTE = frozenset({"t", "numpy_T", "mT", "transpose", "permute"})
_RESHAPE = frozenset(
    {
        "view",
        "reshape",
        "_unsafe_view",
        "flatten",
        "unflatten",
        "squeeze",
        "unsqueeze",
        "view_as",
        "reshape_as",
    }
)
#: ops returning a tuple whose first item keeps the input's axes
_TUPLE_KEEPING = frozenset(
    {"split", "split_with_sizes", "chunk", "tensor_split", "native_layer_norm", "native_group_norm"}
)
_MAX_DEPTH = 48


class FeatureReader:
    """Feature axes of graph nodes, each node read once. ``weights``: the parameter placeholders
    (``None``: every placeholder)."""

    def __init__(self, weights: Collection[fx.Node] | None = None) -> None:
        self._weights = weights
        self._known: dict[fx.Node, Features] = {}
        self._activations: set[fx.Node] | None = None
        self._cut = False  # the reading in progress hit the depth limit

    def __call__(self, node: fx.Node) -> Features:
        return self._read(node, 0)[0]

    def is_activation(self, node: fx.Node) -> bool:
        """``node`` depends on the parameters or on floating-point inputs. Fixed index tensors
        and interpolation weights computed from sizes or integer inputs don't."""
        if self._activations is None:
            found: set[fx.Node] = set()
            for n in node.graph.nodes:
                if n.op == "placeholder":
                    val = n.meta.get("val")
                    fixed = isinstance(val, torch.Tensor) and not val.is_floating_point()
                    if self._weights is None or n in self._weights or not fixed:
                        found.add(n)
                elif any(a in found for a in n.all_input_nodes):
                    found.add(n)
            self._activations = found
        return node in self._activations

    def is_weight(self, node: fx.Node) -> bool:
        """``node`` is a parameter, maybe seen through casts and transposes."""
        return self._placeholder(node, self._weights)

    def is_input(self, node: fx.Node) -> bool:
        """``node`` is a placeholder (an input, a buffer, a parameter), maybe seen through casts
        and transposes."""
        return self._placeholder(node, None)

    @staticmethod
    def _placeholder(node: fx.Node, among: Collection[fx.Node] | None) -> bool:
        for _ in range(4):
            if node.op == "placeholder":
                return among is None or node in among
            if op_name(node) not in _PERMUTE | {"to", "_to_copy", "type_as", "detach", "alias", "contiguous"}:
                return False
            source = args_of(node)[0]
            if not isinstance(source, fx.Node):
                return False
            node = source
        return False

    def _read(self, node: fx.Node, depth: int) -> tuple[Features, bool]:
        """(features, whether the depth limit cut the reading short)."""
        if node in self._known:
            return self._known[node], False
        if depth > _MAX_DEPTH:
            return None, True
        outer, self._cut = self._cut, False
        found = self._features(node, depth + 1)
        cut, self._cut = self._cut, outer
        if not cut:
            self._known[node] = found
        return found, cut

    def _of(self, node: object, depth: int) -> Features:
        if not isinstance(node, fx.Node):
            return None
        found, cut = self._read(node, depth)
        self._cut = self._cut or cut
        return found

    def _features(self, node: fx.Node, depth: int) -> Features:
        name, args, out = op_name(node), args_of(node), shape_of(node)
        if out is None or not args:
            return None
        nd = len(out)
        if name in _LAST_AXIS:
            return frozenset({nd - 1})
        if name in CONV_OPS:
            return frozenset({1})
        if name in _MATMUL:
            return self._matmul(node, nd, depth)
        if name == "einsum":
            return self._einsum(node, depth)
        source = args[0]
        if not isinstance(source, fx.Node):
            return None
        if name == "getitem":
            return self._item(source, depth)
        inner = self._of(source, depth)
        in_shape = shape_of(source)
        if inner is None or in_shape is None:
            return None if name in _PERMUTE | _RESHAPE | {"select", "expand"} else self._kept(node, depth)
        if name in _PERMUTE:
            order = _permutation(name, args, len(in_shape))
            return frozenset(i for i, a in enumerate(order) if a in inner)
        if name == "select":
            dim = args[1] % len(in_shape)
            return frozenset(a - (a > dim) for a in inner if a != dim)
        if name == "expand" or name in _RESHAPE:
            return _regrouped(in_shape, out, inner)
        return self._kept(node, depth)

    def _kept(self, node: fx.Node, depth: int) -> Features:
        """An op that keeps its inputs' axes (elementwise maths, norms, casts, slices, cat): the
        feature axes of its inputs of the same rank, along axes they don't broadcast."""
        out = shape_of(node)
        assert out is not None
        found: set[int] = set()
        known = False
        for arg in node.all_input_nodes:
            shape = shape_of(arg)
            if shape is None or len(shape) != len(out) or not is_tensor(arg):
                continue
            inner = self._of(arg, depth)
            if inner is not None:
                known = True
                found |= {a for a in inner if shape[a] == out[a]}
        return frozenset(found) if known else None

    def _item(self, source: fx.Node, depth: int) -> Features:
        if op_name(source) in _TUPLE_KEEPING and isinstance(args_of(source)[0], fx.Node):
            return self._of(args_of(source)[0], depth)
        return None

    def _matmul(self, node: fx.Node, nd: int, depth: int) -> Features:
        """``a @ b``: the batch and row axes are ``a``'s, the last axis is ``b``'s (a weight's
        output axis when ``b`` is a parameter)."""
        first = 1 if op_name(node) == "baddbmm" else 0
        a, b = args_of(node)[first], args_of(node)[first + 1]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            return None
        left, right = self._of(a, depth), self._of(b, depth)
        a_shape = shape_of(a)
        found: set[int] = set()
        if left is not None and a_shape is not None and len(a_shape) >= 2:
            shift = nd - len(a_shape)
            found |= {i + shift for i in left if i != len(a_shape) - 1 and i + shift >= 0}
        b_shape = shape_of(b)
        if self.is_weight(b) or (right is not None and b_shape is not None and len(b_shape) - 1 in right):
            found.add(nd - 1)
        return frozenset(found) if found or left is not None or right is not None else None

    def _einsum(self, node: fx.Node, depth: int) -> Features:
        """An output letter is a feature if an operand it comes from has it as one (every axis of
        a weight operand is)."""
        equation = str(args_of(node)[0]).replace(" ", "")
        if "->" not in equation or "." in equation:
            return None
        inputs, output = equation.split("->")
        found: set[int] = set()
        for sub, operand in zip(inputs.split(","), args_of(node)[1], strict=False):
            if not isinstance(operand, fx.Node):
                return None
            inner = frozenset(range(len(sub))) if self.is_weight(operand) else self._of(operand, depth)
            found |= {output.index(c) for i, c in enumerate(sub) if c in output and inner and i in inner}
        return frozenset(found)


def _permutation(name: str, args: tuple, nd: int) -> list[int]:
    """The input axis each output axis of a transpose or permute is."""
    order = list(range(nd))
    if name in ("t", "numpy_T"):
        return order[::-1]
    if name == "mT":
        return [*order[:-2], nd - 1, nd - 2]
    if name == "transpose":
        a, b = args[1] % nd, args[2] % nd
        order[a], order[b] = order[b], order[a]
        return order
    return [d % nd for d in args[1]]


def reshape_groups(
    in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> list[tuple[list[int], list[int]]] | None:
    """The axes a reshape maps onto each other: (input axes, output axes) per group of equal
    size, size-1 axes left out; ``None`` if the sizes don't line up."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    try:
        while True:
            while i < len(in_shape) and in_shape[i] == 1:
                i += 1
            while j < len(out_shape) and out_shape[j] == 1:
                j += 1
            if i >= len(in_shape) or j >= len(out_shape):
                return groups if i >= len(in_shape) and j >= len(out_shape) else None
            group_in, group_out = [i], [j]
            size_in, size_out = in_shape[i], out_shape[j]
            i, j = i + 1, j + 1
            while size_in != size_out:
                if size_in < size_out:
                    size_in *= in_shape[i]
                    group_in.append(i)
                    i += 1
                else:
                    size_out *= out_shape[j]
                    group_out.append(j)
                    j += 1
            groups.append((group_in, group_out))
    except IndexError:
        return None


def _regrouped(in_shape: tuple[int, ...], out_shape: tuple[int, ...], inner: frozenset[int]) -> Features:
    """Feature axes after a reshape: an output axis is one when every input axis it is made of
    (size-1 axes aside) is one. Right-aligned for ``expand``'s new leading axes."""
    if len(out_shape) > len(in_shape) and out_shape[-len(in_shape) :] == in_shape:
        shift = len(out_shape) - len(in_shape)
        return frozenset(a + shift for a in inner)
    groups = reshape_groups(in_shape, out_shape)
    if groups is None:
        return None
    return frozenset(j for group_in, group_out in groups if set(group_in) <= inner for j in group_out)
