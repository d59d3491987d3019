"""Attention sites, found by structure rather than by a fixed op sequence.

A site is two tensors contracted over one axis (the head dimension) whose result reaches a
normalisation over the other axis (``softmax``, or its ``exp(s) / exp(s).sum()`` form) through any
chain of elementwise ops, masks, casts, concatenations (sink logits) and slices, and whose
normalised scores are contracted with a third tensor (the values). Written as ``matmul``, ``bmm``,
``baddbmm`` or ``einsum``; fused as ``scaled_dot_product_attention`` (and its backend ops) or
``flex_attention``. The reader then asks which projection rows land in which query/key head.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from torch import fx

from .ops import CONTRACTION_OPS, SCORE_OPS, SOFTMAX_OPS, args_of, is_fused_attention, is_tensor, op_name

#: how many ops a search crosses between scores, normalisation and the value contraction
_REACH = 16


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


def _activation_contraction(node: fx.Node) -> list[tuple[fx.Node, int]] | None:
    """Operands of a contraction of two activations (no placeholder operand: not a projection)."""
    operands = contraction_operands(node)
    if operands is None or any(n.op == "placeholder" for n, _ in operands):
        return None
    return operands


def _search(start: fx.Node, forward: bool) -> Iterable[fx.Node]:
    """Nodes reached from ``start`` through :data:`SCORE_OPS` (plus the first node past them)."""
    seen, queue = {start}, deque([(start, 0)])
    while queue:
        node, depth = queue.popleft()
        if depth >= _REACH:
            continue
        for nxt in node.users if forward else node.all_input_nodes:
            if nxt in seen or not is_tensor(nxt):
                continue
            seen.add(nxt)
            yield nxt
            if op_name(nxt) in SCORE_OPS:
                queue.append((nxt, depth + 1))


def _normalised_input(node: fx.Node) -> fx.Node | None:
    """The scores a normalisation takes: ``softmax(s)``, or ``e / e.sum(...)``."""
    name = op_name(node)
    if name in SOFTMAX_OPS:
        return args_of(node)[0] if isinstance(args_of(node)[0], fx.Node) else None
    if name == "div" and len(args_of(node)) == 2 and all(isinstance(a, fx.Node) for a in args_of(node)):
        num, den = args_of(node)
        if op_name(den) == "sum" and args_of(den)[0] is num:
            return num
    return None


def _fused_site(node: fx.Node) -> AttentionSite | None:
    q, k, v = args_of(node)[:3]
    if not all(isinstance(t, fx.Node) for t in (q, k, v)):
        return None
    out = node
    if not is_tensor(node):  # tuple output: (out, logsumexp, ...)
        out = next((u for u in node.users if op_name(u) == "getitem" and args_of(u)[1] == 0), node)
    return AttentionSite(q, k, v, out)


def attention_sites(graph: fx.Graph) -> list[AttentionSite]:
    """Every fused attention and every hand-written ``normalise(q . k) . v`` in ``graph``."""
    sites = []
    for node in graph.nodes:
        if is_fused_attention(op_name(node)):
            site = _fused_site(node)
            if site is not None:
                sites.append(site)
            continue
        scores_in = _normalised_input(node)
        if scores_in is None:
            continue
        back = [scores_in, *_search(scores_in, forward=False)]
        qk = next((ops for n in back if (ops := _activation_contraction(n)) is not None), None)
        probs = {node} | {n for n in _search(node, forward=True) if op_name(n) in SCORE_OPS}
        # `ops` is not None where it is yielded (pyright does not narrow a walrus across the tuple).
        mix = cast(
            "tuple[fx.Node, list[tuple[fx.Node, int]]] | None",
            next(
                (
                    (user, ops)
                    for p in probs
                    for user in p.users
                    if (ops := _activation_contraction(user)) is not None and any(o is p for o, _ in ops)
                ),
                None,
            ),
        )
        if qk is None or mix is None:
            continue
        user, ops = mix
        value = next((o for o, _ in ops if o not in probs), None)  # the operand that isn't scores
        if value is None:
            continue
        (q, q_axis), (k, k_axis) = qk
        sites.append(AttentionSite(q, k, value, user, q_axis, k_axis))
    return sites
