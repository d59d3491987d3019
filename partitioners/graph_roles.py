"""Roles and layouts of parameters, read from the operators that consume them.

Each parameter's uses (:mod:`.uses`: its consumers, seen through views and slices of it) say
what it is:

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

from .attention import AttentionSite, attention_sites, score_projections
from .features import FeatureReader
from .layout import BlockLayout, Segment
from .plan import CONV_LAYOUT, Decision
from .row_flow import RowTargets, attention_fed, trace_rows
from .uses import Outer, Use, parameter_uses


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
    if any(q[s] != k[s] for s in q.keys() & k.keys()):
        return None  # a row feeds two heads
    # a head read on both sides (DeBERTa's p2c scores take the keys as queries) is one key head
    heads = {**{s: (n, "q") for s, n in q.items()}, **{s: (n, "k") for s, n in k.items()}}
    spans = sorted(heads.items())
    if any(s + n > t for (s, (n, _)), (t, _) in itertools.pairwise(spans)):
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
    placements = {(u.axis, u.batch_axes, u.inner, tuple(a for a, _ in u.picks)) for u in uses}
    if len(placements) != 1:
        return None
    axis, batch, inner, picked = placements.pop()
    if axis is None:
        return None
    if batch or picked:
        return _expert_projections(uses, shape, axis, batch + picked, ctx)
    found = _row_decision(uses, shape, axis, ctx)
    return found if found is None or not inner else _with_inner(found, inner)


def _row_decision(uses: list[Use], shape: tuple[int, ...], axis: int, ctx: GraphContext) -> Decision | None:
    """The decision for the rows along ``axis``, from where each use's rows go."""
    by_rows: dict[tuple[int, int], set[Decision]] = defaultdict(set)
    for use in uses:
        start, stop = use.rows or (0, shape[axis])
        decision = _projection(use, stop - start, axis, ctx)
        if decision is None:
            return None
        by_rows[(start, stop)].add(decision)
    for found in by_rows.values():  # the same heads as queries in one use, keys in another
        if {d.role for d in found} == {"query", "key"} and len({d.layout for d in found}) == 1:
            found.difference_update([d for d in found if d.role == "query"])
        if {d.role for d in found} in ({"linear", "query"}, {"linear", "key"}) and len(found) == 2:
            # heads read in one use; another whose rows reach no attention the reader follows
            # (XLNet's query stream picked by a target mapping) doesn't make them rows
            found.difference_update([d for d in found if d.role == "linear"])
        if len(found) != 1:
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


def _with_inner(decision: Decision, inner: tuple[int, ...]) -> Decision | None:
    """A decision read along one output axis of a weight with more (an einsum weight
    ``(D, H, HD)``): a query or key head spans the inner axes; any other output neuron is one
    (row, inner) index."""
    layout = decision.layout
    if decision.role in ("query", "key") and not layout.segments:
        return decision
    if layout.segments or layout.group != 1 or layout.batch_axes:
        return None  # per-head and per-neuron parts mixed: not expressible
    return Decision(decision.role, BlockLayout.rows(layout.axis, batch_axes=inner))


def _expert_projections(
    uses: list[Use], shape: tuple[int, ...], axis: int, batch: tuple[int | Outer, ...], ctx: GraphContext
) -> Decision | None:
    """Expert weights: one block per (expert, output neuron). Parts taken one by one by a
    constant index (``W[i]``: experts in a loop, or stacked projections) are read each like a
    plain weight: their query/key heads show, and parts of different roles are no experts."""
    layout = _expert_layout(axis, batch)
    if layout is None:
        return None
    by_pick: dict[tuple[tuple[int, int], ...], list[Use]] = defaultdict(list)
    for use in uses:
        by_pick[use.picks].append(use)
    if set(by_pick) == {()}:
        return Decision("expert", layout)
    found = {_row_decision(group, shape, axis, ctx) for group in by_pick.values()}
    if None in found or len(found) != 1:
        return None
    one = next(iter(found))
    assert one is not None
    if one.role in ("query", "key") and not one.layout.segments:
        return Decision(
            one.role, BlockLayout.rows(axis, group=one.layout.group, batch_axes=layout.batch_axes)
        )
    if one.layout.segments or one.layout.group != 1:
        return None
    return Decision("expert", layout)


def _expert_layout(axis: int, batch: tuple[int | Outer, ...]) -> BlockLayout | None:
    """One block per (expert, output neuron). Experts stored flat (:class:`~.uses.Outer`) group
    their ``inner`` rows of the split axis per expert; when the outputs are those rows, each row
    is already one (expert, neuron)."""
    plain = tuple(b for b in batch if isinstance(b, int))
    flat = {b for b in batch if isinstance(b, Outer)}
    if len(flat) > 1 or len(set(plain)) != len(plain) or axis in plain:
        return None
    if not flat:
        return BlockLayout.rows(axis, batch_axes=plain)
    outer = flat.pop()
    if outer.axis == axis:
        return BlockLayout.rows(axis, batch_axes=plain)
    if outer.axis in plain:
        return None
    return BlockLayout.rows(outer.axis, group=outer.inner, batch_axes=(axis, *plain))


def _table(uses: list[Use], kinds: set[str]) -> Decision | None:
    """Rows read by position (a table added along positions) or used as tokens (the input of a
    linear map or a norm): one block per position or token; one token (also added to the
    activations its own projection gives: a residual): one block."""
    placements = {(u.axis, u.batch_axes) for u in uses}
    if len(placements) != 1:
        return None
    axis, batch = placements.pop()
    role = "token" if "tokens" in kinds else "position"
    if axis is None:
        return Decision(role, BlockLayout.tensor())
    if any(isinstance(b, Outer) or b == axis for b in batch):
        return None
    return Decision(role, BlockLayout.rows(axis, batch_axes=[b for b in batch if isinstance(b, int)]))


def _conv(uses: list[Use], shape: tuple[int, ...], ctx: GraphContext) -> Decision:
    """A convolution is one block, unless its kernel is 1 and its channels feed attention heads
    (SqueezeBERT's query and key convs): the attention role wins."""
    if ctx.sites and all(u.node is not None for u in uses):
        found = _projections(uses, shape, ctx)
        if found is not None and found.role in ("query", "key", "qkv"):
            return found
    return Decision("conv", CONV_LAYOUT)


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
        axis = axes.pop() if len(axes) == 1 else None
        return None if axis is None else Decision("embedding", BlockLayout.rows(axis))
    if kinds <= {"table", "tokens"} or ("tokens" in kinds and kinds <= {"table", "tokens", "shift"}):
        return _table(uses, kinds)
    if kinds == {"token"}:
        return Decision("token", BlockLayout.tensor())
    if kinds == {"scale"}:
        return Decision("norm", BlockLayout.tensor())
    if kinds == {"shift"}:
        return Decision("bias", BlockLayout.element())
    if kinds == {"conv"}:
        return _conv(uses, shape, ctx)
    if kinds != {"project"}:
        return None
    return _projections(uses, shape, ctx)


#: roles of a projection whose query or key heads were read (a conv stays one block)
_HEADS_READ = frozenset({"query", "key", "qkv", "conv"})


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
    features = FeatureReader(set(params))
    scoring = score_projections(graph)
    for node, name in params.items():
        if name not in shapes:
            continue
        uses = parameter_uses(node, shapes[name], features)
        if uses:
            ctx.heads_unread = False
            decision = decide(uses, shapes[name], ctx)
            if any(u.node in scoring for u in uses) and (
                decision is None or decision.role not in _HEADS_READ
            ):
                ctx.heads_unread, decision = True, None  # scored against another projection, heads unread
            reading.decisions[name] = decision
            if ctx.heads_unread:
                reading.heads_unread.add(name)
    return reading
