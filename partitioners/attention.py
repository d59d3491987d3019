"""Attention sites, found by structure rather than by a fixed op sequence.

A site is a query and a key contracted per head over one axis (the head dimension), whose product
(the scores) is contracted with a third tensor (the values) over the key's other axis. Written as
``matmul``, ``bmm``, ``baddbmm`` or ``einsum``; fused as ``scaled_dot_product_attention`` (and its
backend ops) or ``flex_attention``. Between the two contractions the scores may pass elementwise
ops, masks, casts, concatenations (sink logits) and slices, and either

* a normalisation over the key axis (``softmax``, its ``exp(s) / exp(s).sum()`` form, or
  ``exp(s - logsumexp(s))``); every
  per-head contraction added to the scores before it is a site of its own (relative-position
  scores: DeBERTa's ``q . pos_k``, Transformer-XL's skewed ``q . r``, ViTDet's ``q . R_h``), or
* no normalisation (linear attention: decay masks, the chunked delta rule). Then the evidence
  must come from the contractions themselves: both are of activations with a batch (head) axis,
  the scores' key axis is the one the value contraction runs over, and neither query nor key is
  itself a product of two activations (so a ``scores @ k`` inside a chunked recurrence is no site).

The Hessian argument for one block per head holds for any such bilinear ``q_h . k_h`` form. The
reader then asks which projection rows land in which query/key head.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import fx

from .ops import (
    CONTRACTION_OPS,
    CONV_OPS,
    EMBEDDING_OPS,
    IDENTITY_OPS,
    MOVE_OPS,
    SCORE_OPS,
    SOFTMAX_OPS,
    args_of,
    is_fused_attention,
    is_tensor,
    op_name,
    shape_of,
)

#: how many ops a search crosses between scores, normalisation and the value contraction
_REACH = 16
#: ops relative-position scores pass on their way to the content scores: the gather by relative
#: distance (DeBERTa) and the transposes of a key-side score (p2c), besides the pad/view skew
_POSITION_SCORE_OPS = SCORE_OPS | {"gather", "index_select", "transpose", "permute", "t", "mT"}
#: ops whose weight operand makes them a projection: a query or key is read past none of them
_PROJECTION_OPS = CONV_OPS | EMBEDDING_OPS | {"linear", "addmm", "_grouped_mm", "grouped_mm"}


#: position of the index (or condition) argument of ops that pick, write or select by it
_INDEX_ARGS = {
    **dict.fromkeys(("gather", "index_select", "index_add", "index_add_", "index_copy", "index_fill"), 2),
    **dict.fromkeys(("scatter", "scatter_", "scatter_add", "scatter_add_", "scatter_reduce"), 2),
    **dict.fromkeys(("index", "_unsafe_index", "index_put", "index_put_", "masked_fill", "masked_fill_"), 1),
    "where": 0,
}


@dataclass
class AttentionSite:
    """One attention: query, key and value inputs, the output, and the head-dim axes.

    ``query_axis``/``key_axis``: the axis of the query/key tensor contracted in ``q . k`` (the
    head dimension; ``-2`` for the ``k^T`` of a hand-written ``q @ k.transpose(-2, -1)``).
    """

    query: fx.Node
    key: fx.Node
    value: fx.Node
    output: fx.Node
    query_axis: int = -1
    key_axis: int = -1


def contraction_operands(node: fx.Node) -> list[tuple[fx.Node, int]] | None:
    """The two operands of a contraction and the axis each is contracted along; ``None`` if the
    op contracts over anything but exactly one axis."""
    name = op_name(node)
    if name == "einsum":
        equation, operands = args_of(node)[0], args_of(node)[1]
        if not isinstance(equation, str) or "->" not in equation or "." in equation or len(operands) != 2:
            return None
        inputs, output = equation.replace(" ", "").split("->")
        a, b = inputs.split(",")
        shared = [c for c in a if c in b and c not in output]
        if len(shared) != 1:
            return None
        return [(operands[0], a.index(shared[0])), (operands[1], b.index(shared[0]))]
    if name in CONTRACTION_OPS:
        first = 1 if name == "baddbmm" else 0
        a, b = args_of(node)[first], args_of(node)[first + 1]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            return None
        return [(a, -1), (b, -2)]
    return None


def is_weight(node: fx.Node) -> bool:
    """``node`` is a parameter (or buffer, or input) seen through data movement: a view, a slice,
    an expert or relative-distance index."""
    while node.op == "call_function" and op_name(node) in MOVE_OPS | IDENTITY_OPS:
        source = args_of(node)[0]
        if not isinstance(source, fx.Node):
            return False
        node = source
    return node.op in ("placeholder", "get_attr")


def _activation_contraction(node: fx.Node) -> list[tuple[fx.Node, int]] | None:
    """Operands of a contraction of two activations (no weight operand: not a projection)."""
    operands = contraction_operands(node)
    if operands is None or any(is_weight(n) for n, _ in operands):
        return None
    return operands


def _free_axes(node: fx.Node) -> tuple[int, int] | None:
    """The output axes (negative) that index the first and the second operand's rows (query and
    key positions) of a per-head contraction; ``None`` without a batch axis both operands share,
    or with more than one row axis per operand."""
    name = op_name(node)
    if name == "einsum":
        equation = args_of(node)[0]
        inputs, out = equation.replace(" ", "").split("->")
        a, b = inputs.split(",")
        a_rows, b_rows = [c for c in a if c not in b], [c for c in b if c not in a]
        if not any(c in b and c in out for c in a) or len(a_rows) != 1 or len(b_rows) != 1:
            return None
        return out.index(a_rows[0]) - len(out), out.index(b_rows[0]) - len(out)
    shapes = [shape_of(n) for n, _ in contraction_operands(node) or []]
    if name in ("bmm", "baddbmm") or (
        name == "matmul" and all(s is not None and len(s) >= 3 for s in shapes)
    ):
        return -2, -1
    return None


def _search(
    start: fx.Node, forward: bool, through: frozenset[str] | Callable[[fx.Node], bool] = SCORE_OPS
) -> Iterable[fx.Node]:
    """Nodes reached from ``start`` through ``through`` ops (tensors only), plus the first node
    past them; or through the nodes ``through`` accepts (tuples too: a ``chunk``), back only
    along the data they carry (:func:`_data_inputs`)."""
    crosses = through if callable(through) else (lambda n: op_name(n) in through)
    inputs = _data_inputs if callable(through) else (lambda n: n.all_input_nodes)
    seen, queue = {start}, deque([(start, 0)])
    while queue:
        node, depth = queue.popleft()
        if depth >= _REACH:
            continue
        for nxt in node.users if forward else inputs(node):
            if nxt in seen or not (callable(through) or is_tensor(nxt)):
                continue
            seen.add(nxt)
            yield nxt
            if crosses(nxt):
                queue.append((nxt, depth + 1))


def _normalised_input(node: fx.Node) -> fx.Node | None:
    """The scores a normalisation takes: ``softmax(s)``, ``e / e.sum(...)``, or the log-softmax
    ``s - logsumexp(s)`` (``exp`` of it is the softmax)."""
    name = op_name(node)
    if name in SOFTMAX_OPS:
        return args_of(node)[0] if isinstance(args_of(node)[0], fx.Node) else None
    pair = args_of(node)[:2]
    if len(pair) != 2 or not all(isinstance(a, fx.Node) for a in pair):
        return None
    first, second = pair
    if name == "div" and op_name(second) == "sum" and args_of(second)[0] is first:
        return first
    if name == "sub" and op_name(second) == "logsumexp" and args_of(second)[0] is first:
        return first  # a log-softmax: ``exp`` of it (a score op) is the softmax
    return None


def _fused_sites(node: fx.Node) -> list[AttentionSite]:
    """A fused attention, and the score terms in its additive mask (relative positions)."""
    q, k, v = args_of(node)[:3]
    if not all(isinstance(t, fx.Node) for t in (q, k, v)):
        return []
    out = node
    if not is_tensor(node):  # tuple output: (out, logsumexp, ...)
        out = next((u for u in node.users if op_name(u) == "getitem" and args_of(u)[1] == 0), node)
    mask = node.kwargs.get("attn_mask", args_of(node)[3] if len(args_of(node)) > 3 else None)
    terms = _score_terms(mask, per_head=True) if isinstance(mask, fx.Node) and is_tensor(mask) else []
    return [AttentionSite(q, k, v, out), *(AttentionSite(a, b, v, out, i, j) for (a, i), (b, j) in terms)]


def _mixes_tokens(node: fx.Node) -> bool:
    """``node`` is computed from a contraction of two activations (or an attention) since the
    last projection: it is no per-token query or key but a product of scores."""
    seen, stack = {node}, [node]
    while stack:
        current = stack.pop()
        name = op_name(current)
        if name in _PROJECTION_OPS or current.op != "call_function":
            continue
        if is_fused_attention(name) or _activation_contraction(current) is not None:
            return True
        if contraction_operands(current) is not None:
            continue  # a projection by a weight
        for source in current.all_input_nodes:
            if source not in seen:
                seen.add(source)
                stack.append(source)
    return False


def _value_contraction(probs: list[fx.Node], key: tuple[int, int] | None) -> tuple[fx.Node, fx.Node] | None:
    """``(contraction, value)``: the first contraction of activations that takes one of ``probs``
    with a tensor that isn't scores; with ``key`` (axis, negative, and size), only one that
    contracts the scores over that axis."""
    members = set(probs)
    for p in probs:
        shape = shape_of(p)
        for user in p.users:
            operands = _activation_contraction(user) or []
            for (operand, axis), (value, _) in zip(operands, operands[::-1], strict=True):
                if operand is not p or value in members:
                    continue
                if key is not None and (
                    shape is None or (axis % len(shape) - len(shape), shape[axis]) != key
                ):
                    continue
                return user, value
    return None


def _scores_from(node: fx.Node) -> list[fx.Node]:
    """``node`` and what it reaches through :data:`SCORE_OPS`, in search order."""
    return [node, *(n for n in _search(node, forward=True) if op_name(n) in SCORE_OPS)]


def _score_terms(scores: fx.Node, per_head: bool) -> list[list[tuple[fx.Node, int]]]:
    """The operands of every contraction of activations summed into ``scores``: the content
    scores and relative-position terms. Of several (or with ``per_head``), the per-head bilinear
    forms; without ``per_head`` and with none of those, the nearest (one head, ``mm``)."""
    back = [scores, *_search(scores, forward=False, through=_POSITION_SCORE_OPS)]
    terms = [(n, ops) for n in back if (ops := _activation_contraction(n)) is not None]
    heads = [ops for n, ops in terms if _per_head(n)]
    # of several, the bilinear forms of projected activations: not a segment term (XLNet's
    # one-hot segment matrix against ``q . seg_embed``)
    heads = [ops for ops in heads if all(_projected(t) for t, _ in ops)] or heads
    return heads if per_head or heads else [ops for _, ops in terms[:1]]


def _per_head(node: fx.Node) -> bool:
    """A contraction of row axes with an output axis both operands share (heads, batch); an
    operand may have several row axes (Funnel's ``binh,tnh``: position keys shared by the batch)."""
    if op_name(node) != "einsum":
        return _free_axes(node) is not None
    inputs, out = args_of(node)[0].replace(" ", "").split("->")
    a, b = inputs.split(",")
    return any(c in b and c in out for c in a) and any(c not in b for c in a) and any(c not in a for c in b)


def _is_projection(node: fx.Node) -> bool:
    """``node`` multiplies an activation by a weight: a linear map, conv, or contraction with a
    weight operand (an embedding lookup is no projection of the token stream)."""
    if op_name(node) in _PROJECTION_OPS - EMBEDDING_OPS:
        return True
    operands = contraction_operands(node)
    return operands is not None and any(is_weight(n) for n, _ in operands)


def _in_stream(node: fx.Node) -> bool:
    """``node`` neither projects, nor mixes tokens, nor normalises (a router's gates, another
    attention's probabilities): searches for sources and uses cross it."""
    return (
        not _is_projection(node) and _activation_contraction(node) is None and _normalised_input(node) is None
    )


def _data_inputs(node: fx.Node) -> list[fx.Node]:
    """The inputs whose values ``node`` carries on: not the indices it picks or writes by, nor
    the condition it selects by (a router's top-k experts choose rows, they are no features)."""
    name, args = op_name(node), args_of(node)
    skipped = args[_INDEX_ARGS[name]] if name in _INDEX_ARGS and len(args) > _INDEX_ARGS[name] else None
    dropped = set(skipped if isinstance(skipped, list | tuple) else [skipped])
    return [n for n in node.all_input_nodes if n not in dropped]


def _source_projections(node: fx.Node) -> set[fx.Node]:
    """The nearest projections ``node`` is computed from (within :data:`_REACH` ops, past no
    contraction of activations)."""
    if not _in_stream(node):
        return {node} if _is_projection(node) else set()
    return {n for n in _search(node, forward=False, through=_in_stream) if _is_projection(n)}


def _projected(node: fx.Node) -> bool:
    """``node`` is computed from a projection by a weight."""
    return bool(_source_projections(node))


def _score_pairs(node: fx.Node) -> list[tuple[fx.Node, ...]]:
    """The pairs of tensors contracted into the scores that ``node`` normalises before they
    weight values: a fused attention's query and key, or the operands of every per-head
    contraction of activations its scores are computed from (a product without a head axis is a
    bias shared by the heads)."""
    if is_fused_attention(op_name(node)):
        return [tuple(a for a in args_of(node)[:2] if isinstance(a, fx.Node))]
    scores = _normalised_input(node)
    weighs = scores is not None and any(
        _activation_contraction(n) is not None for n in _search(node, forward=True, through=_in_stream)
    )
    if scores is None or not weighs:
        return []
    back = [scores, *_search(scores, forward=False, through=_in_stream)] if _in_stream(scores) else [scores]
    return [
        tuple(n for n, _ in ops)
        for c in back
        if (ops := _activation_contraction(c)) is not None and _per_head(c)
    ]


def score_projections(graph: fx.Graph) -> set[fx.Node]:
    """The projections on both sides of every attention's scores, read as a site or not: each
    must be read as query or key heads (the safety net for attention the reader can't follow,
    through ``as_strided`` chunks or a sort by hash)."""
    found: set[fx.Node] = set()
    for node in graph.nodes:
        for pair in _score_pairs(node):
            sides = [_source_projections(n) for n in pair]
            if len(sides) == 2 and all(sides):
                found |= sides[0] | sides[1]
    return found


def _normalised_sites(node: fx.Node) -> list[AttentionSite]:
    """The sites of the scores a normalisation ``node`` takes: one per score term."""
    scores_in = _normalised_input(node)
    mix = _value_contraction(_scores_from(node), None) if scores_in is not None else None
    if scores_in is None or mix is None:
        return []
    output, value = mix
    return [
        AttentionSite(q, k, value, output, i, j) for (q, i), (k, j) in _score_terms(scores_in, per_head=False)
    ]


def _unnormalised_site(node: fx.Node) -> AttentionSite | None:
    """Linear attention: ``node`` is ``q . k`` per head and its scores weight values directly."""
    operands = _activation_contraction(node)
    rows = _free_axes(node) if operands is not None else None
    shape = shape_of(node)
    if operands is None or rows is None or shape is None or any(_mixes_tokens(n) for n, _ in operands):
        return None
    mix = _value_contraction(_scores_from(node), (rows[1], shape[rows[1]]))
    if mix is None:
        return None
    output, value = mix
    (q, q_axis), (k, k_axis) = operands
    return AttentionSite(q, k, value, output, q_axis, k_axis)


def attention_sites(graph: fx.Graph) -> list[AttentionSite]:
    """Every fused attention and every hand-written ``q . k`` weighting values in ``graph``."""
    sites: list[AttentionSite] = []
    for node in graph.nodes:
        sites += _fused_sites(node) if is_fused_attention(op_name(node)) else _normalised_sites(node)
    scored = {(s.query, s.key) for s in sites}
    for node in graph.nodes:
        site = _unnormalised_site(node) if op_name(node) in CONTRACTION_OPS else None
        if site is not None and (site.query, site.key) not in scored:
            sites.append(site)
    return sites
