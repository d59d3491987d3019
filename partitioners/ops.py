"""The ATen operator vocabulary the graph reader understands, in one place.

Ops are named by their overload packet (``'linear'`` for ``aten.linear.default``). Each family
below says how an op moves a parameter's rows, so :mod:`.row_flow`, :mod:`.attention` and
:mod:`.graph_roles` agree on what an op does.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx
from torch.fx.experimental.symbolic_shapes import is_concrete_int

#: data movement: run on a label tensor as they are (``view`` is run as ``reshape``: labels of
#: an ``expand`` are not contiguous)
MOVE_OPS = frozenset(
    {
        "view",
        "reshape",
        "_unsafe_view",
        "transpose",
        "t",
        "mT",
        "permute",
        "unsqueeze",
        "squeeze",
        "expand",
        "slice",
        "select",
        "split",
        "split_with_sizes",
        "chunk",
        "tensor_split",
        "unbind",
        "narrow",
        "unflatten",
        "flatten",
        "movedim",
        "repeat",
        "repeat_interleave",
        "numpy_T",
        "view_as",
        "reshape_as",
        "expand_as",
        "broadcast_to",
        "stack",
        "getitem",
        "contiguous",
        "clone",
        "roll",
        "flip",
        "index_select",
        "gather",
        "index",
    }
)
#: write a source into part of a base, out of place (``base`` is argument 0, source argument 1)
SCATTER_OPS = frozenset(
    {"slice_scatter", "select_scatter", "diagonal_scatter", "as_strided_scatter", "index_copy", "index_put"}
)
#: write into their first argument in place (a view of a fresh or labelled tensor)
INPLACE_WRITE_OPS = frozenset({"copy_", "index_copy_", "index_put_", "slice_scatter_"})
#: fresh tensors: no rows until something is written into them
CREATION_OPS = frozenset(
    {
        "empty",
        "zeros",
        "ones",
        "full",
        "new_empty",
        "new_zeros",
        "new_ones",
        "new_full",
        "empty_like",
        "zeros_like",
        "ones_like",
        "full_like",
        "empty_strided",
        "new_empty_strided",
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
        "float",
        "half",
        "bfloat16",
    }
)
#: elementwise: labels broadcast from the labelled operands; two labelled operands pair rows
#: (``clamp``: DBRX's and OLMo's ``clip_qkv`` on the fused q|k|v output)
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
        "addcmul",
        "clamp",
        "clamp_",
        "clamp_min",
        "clamp_max",
    }
)
#: activations and the constant pad: each output element keeps its input element's row, but the
#: result is no longer the projection's output (followed only where rows may mix)
FEATURE_MAPS = frozenset(
    {"silu", "gelu", "relu", "elu", "sigmoid", "tanh", "softplus", "exp", "mish", "pad", "constant_pad_nd"}
)
#: complex views: a complex element pairs two real rows
COMPLEX_OPS = frozenset({"view_as_complex", "view_as_real", "polar", "complex"})
#: contractions of two tensors (``baddbmm`` takes the added tensor first)
CONTRACTION_OPS = frozenset({"matmul", "bmm", "baddbmm", "mm", "einsum"})
#: normalisations over the key axis
SOFTMAX_OPS = frozenset({"softmax", "_softmax", "_safe_softmax", "log_softmax", "_log_softmax"})
#: fused attention (query, key, value are arguments 0, 1, 2)
FUSED_ATTENTION_PREFIXES = ("scaled_dot_product", "_scaled_dot_product", "flex_attention")
#: ops scores may pass between the q.k contraction and the normalisation, and probabilities
#: between it and the contraction with v: elementwise maths, masks, casts, concatenations with
#: sink logits and the slices that drop them, max subtraction, layout changes
SCORE_OPS = (
    IDENTITY_OPS
    | ELEMENTWISE_OPS
    | frozenset(
        {
            "masked_fill",
            "masked_fill_",
            "where",
            "clamp",
            "clamp_min",
            "clamp_max",
            "tanh",
            "exp",
            "sigmoid",
            "softcap",
            "amax",
            "max",
            "maximum",
            "cat",
            "slice",
            "select",
            "getitem",
            "view",
            "reshape",
            "_unsafe_view",
            "contiguous",
            "expand",
            "unsqueeze",
            "squeeze",
            "clone",
            "pad",
            "constant_pad_nd",
        }
    )
)
NORM_OPS = {  # op -> (weight arg index, bias arg index)
    "layer_norm": (2, 3),
    "native_layer_norm": (2, 3),
    "rms_norm": (2, None),
    "_fused_rms_norm": (2, None),
    "group_norm": (2, 3),
    "native_group_norm": (1, 2),
    "batch_norm": (1, 2),
    "native_batch_norm": (1, 2),
    "_native_batch_norm_legit": (1, 2),
    "_native_batch_norm_legit_functional": (1, 2),
    "_native_batch_norm_legit_no_training": (1, 2),
    "instance_norm": (1, 2),
}
CONV_OPS = frozenset(
    {
        "convolution",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "_convolution",
    }
)
EMBEDDING_OPS = frozenset({"embedding", "embedding_bag", "_embedding_bag"})
#: projections whose weight carries an expert axis (batched)
BATCHED_PROJECTION_OPS = frozenset({"bmm", "baddbmm", "_grouped_mm", "grouped_mm"})
#: views a forward takes of a weight; the axis mapping is read from the shapes
WEIGHT_VIEWS = frozenset(
    {
        "t",
        "mT",
        "transpose",
        "permute",
        "numpy_T",
        "select",
        "index",
        "unsqueeze",
        "squeeze",
        "expand",
        "repeat",
        "view",
        "reshape",
        "getitem",
    }
)
#: slices of a weight along one axis (a packed weight split into its projections)
WEIGHT_SLICES = frozenset({"split", "split_with_sizes", "chunk", "slice", "narrow", "unbind"})
#: arithmetic with a number: the tensor keeps its layout (in place too: RWKV rescales its output
#: weights with ``weight.div_(2 ** k)`` in an eval-mode forward)
SCALAR_ARITH = frozenset({"add", "sub", "mul", "div", "rsub", "add_", "sub_", "mul_", "div_"})


#: ``node.meta`` key of a tensor constant's value, set by the tracer (the label flow reads
#: constant indices such as ``x[..., [-2], :]``)
CONSTANT = "partitioners_constant"


def args_of(node: fx.Node) -> tuple[Any, ...]:
    """``node.args``, typed loosely: what each position holds depends on the op."""
    return node.args


def op_name(node: fx.Node) -> str:
    """``'linear'`` for ``aten.linear.default``, ``'getitem'`` for ``operator.getitem``..."""
    if node.op != "call_function":
        return ""
    if node.target is operator.getitem:
        return "getitem"
    return getattr(node.target, "_opname", getattr(node.target, "__name__", str(node.target)))


def shape_of(node: Any) -> tuple[int, ...] | None:
    """The static shape of ``node``'s tensor value; ``None`` if it has a symbolic size.

    A symbolic (or unbacked, data-dependent) size is never turned into an int: that would add a
    guard, or raise on an unbacked one.
    """
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    if not isinstance(val, torch.Tensor):
        return None
    if not all(is_concrete_int(s) for s in val.shape):
        return None
    return tuple(int(s) for s in val.shape)


def is_tensor(node: fx.Node) -> bool:
    """``node`` holds one tensor (not a size, not a tuple)."""
    return isinstance(node.meta.get("val"), torch.Tensor)


def is_fused_attention(name: str) -> bool:
    return name.startswith(FUSED_ATTENTION_PREFIXES)
