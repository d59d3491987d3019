"""Attention the reader used to miss without a word: scores normalised as ``exp(s - logsumexp(s))``,
several per-head contractions summed into the scores (content, relative position, segment), and
the safety net that names every projection feeding an attention whose heads it couldn't read.

Sizes: model width C=32, H=4 heads of D=8, T=6 tokens. Every expected layout is written by hand
from the module's forward: q/k projections one block per head, v and the rest one per row.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from partitioners import BlockLayout, PartitionWarning, auto_partition
from partitioners.attention import attention_sites
from partitioners.ops import op_name

from .partitions import mismatches
from .test_attention_variants import HEADS, ROWS, C, D, H, T, X, check, merge_heads, split_heads


# ---- 1. exp(s - logsumexp(s)) is a softmax ------------------------------------------------------
class LogSumExpAttention(nn.Module):
    """One head over the whole width on unbatched (T, C) tokens, as 2-D ``mm``s: only the
    normalisation says these are scores (no batch axis makes them a per-head product)."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(C, C, bias=False) for _ in range(4))

    def forward(self, x):
        tokens = x[0]
        scores = self.q(tokens) @ self.k(tokens).T
        probs = torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True))
        return self.o(probs @ self.v(tokens))


class ShiftedByOtherScores(LogSumExpAttention):
    """Near miss: ``exp(s - logsumexp(t))`` for other scores ``t`` normalises nothing."""

    def forward(self, x):
        tokens = x[0]
        scores = self.q(tokens) @ self.k(tokens).T
        probs = torch.exp(scores - torch.logsumexp(scores * 2.0, dim=-1, keepdim=True))
        return self.o(probs @ self.v(tokens))


def test_exp_of_scores_minus_their_logsumexp_is_a_softmax():
    one_head = BlockLayout.rows(group=C)
    check(
        LogSumExpAttention(), {"q.weight": one_head, "k.weight": one_head, "v.weight": ROWS, "o.weight": ROWS}
    )


def test_scores_minus_the_logsumexp_of_other_scores_are_no_attention():
    check(ShiftedByOtherScores(), {f"{p}.weight": ROWS for p in "qkvo"})


# ---- 2. several score terms: content q.k, position q.r, and a segment term that is no q.k ------
class RelativeSegmentAttention(nn.Module):
    """XLNet/Funnel-style: q, k, r are einsum weights (C, H, D). The scores sum the content
    ``q . k``, the position ``q . r`` (sinusoids of 2T distances projected by ``r``, shared by the
    batch, relative-shifted by reshape, slice and ``index_select``) and a segment term: a one-hot
    "same segment" matrix of the inputs (no projection) against ``q . seg_embed``."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.r = (nn.Parameter(torch.randn(C, H, D)) for _ in range(3))
        self.seg_embed = nn.Parameter(torch.randn(2, H, D))
        self.v, self.o = nn.Linear(C, C, bias=False), nn.Linear(C, C, bias=False)

    def forward(self, x):
        B, L, _ = x.shape
        q = torch.einsum("bic,chd->bihd", x, self.q)
        k = torch.einsum("bjc,chd->bjhd", x, self.k)
        distances = torch.arange(2 * L, dtype=x.dtype, device=x.device)
        sinusoids = torch.sin(distances[:, None] * torch.arange(C, dtype=x.dtype, device=x.device))
        r = torch.einsum("tc,chd->thd", sinusoids, self.r)
        content = torch.einsum("bihd,bjhd->bhij", q, k)
        position = torch.einsum("bihd,thd->bhit", q, r).reshape(B, H, 2 * L, L)[:, :, 1:]
        position = position.reshape(B, H, L, 2 * L - 1).index_select(3, torch.arange(L, device=x.device))
        segments = torch.arange(L, device=x.device) >= L // 2
        same = segments[:, None] == segments[None, :]
        other = torch.stack([same, ~same], dim=-1).to(x.dtype)  # (i, j, s): one-hot "same segment"
        segment = torch.einsum("ijs,bihs->bhij", other, torch.einsum("bihd,shd->bihs", q, self.seg_embed))
        probs = (content + position + segment).softmax(-1)
        return self.o(merge_heads(probs @ split_heads(self.v(x))))


class TwoStreamQueries(nn.Module):
    """XLNet-style two streams through one query weight: the content stream's queries, and the
    queries of a second stream moved onto the last 2 positions by a one-hot target mapping (a
    contraction over positions the row flow doesn't follow); both attend to the same keys."""

    targets: torch.Tensor

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(C, C, bias=False) for _ in range(4))
        self.register_buffer("targets", torch.eye(T)[-2:])  # (2, T)

    def forward(self, x):
        k, v = split_heads(self.k(x)), split_heads(self.v(x))
        content = split_heads(self.q(x))
        picked = torch.einsum("bmc,mt->btc", self.q(x[:, :2]), self.targets)
        out = (content @ k.mT).softmax(-1) @ v + (split_heads(picked) @ k.mT).softmax(-1) @ v
        return self.o(merge_heads(out))


def test_a_query_weight_read_in_one_stream_is_a_query_in_the_other_too():
    check(TwoStreamQueries(), {"q.weight": HEADS, "k.weight": HEADS, "v.weight": ROWS, "o.weight": ROWS})


def test_score_terms_of_projections_are_sites_and_the_segment_term_is_not():
    traced = make_fx(RelativeSegmentAttention(), pre_dispatch=True)
    graph = traced(torch.zeros(2, T, C)).graph
    einsums = [n for n in graph.nodes if op_name(n) == "einsum"]
    # forward order: q, k, r projections, content q.k, position q.r, q.seg_embed, segment term
    q, k, r, content, position = einsums[:5]
    sites = attention_sites(graph)
    assert {(s.query, s.key) for s in sites} == {(q, k), (q, r)}, [(s.query, s.key) for s in sites]
    assert (content.args[1][1], position.args[1][1]) == (k, r)


def test_query_key_and_position_key_einsum_weights_are_read_per_head():
    per_head = BlockLayout.rows(1)  # (C, H, D): one block per head
    expected = {
        "q": per_head,
        "k": per_head,
        "r": per_head,
        "seg_embed": BlockLayout.rows(0, batch_axes=(1,)),  # one block per (segment, head)
        "v.weight": ROWS,
        "o.weight": ROWS,
    }
    check(RelativeSegmentAttention(), expected)


# ---- 3. the safety net: attention whose heads can't be read is named, never silently per row ---
class StridedChunkAttention(nn.Module):
    """Longformer-style sliding windows: q, k, v cut into overlapping chunks of 4 tokens (stride
    2) by ``as_strided``, which the row flow doesn't follow; scored, normalised, weighting v."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(C, C, bias=False) for _ in range(4))

    def forward(self, x):
        B, L, _ = x.shape

        def chunks(t: torch.Tensor) -> torch.Tensor:
            heads = split_heads(t).contiguous()  # (B, H, L, D)
            return heads.as_strided((B, H, 2, 4, D), (H * L * D, L * D, 2 * D, D, 1))

        scores = torch.einsum("bhcid,bhcjd->bhcij", chunks(self.q(x)), chunks(self.k(x)))
        out = torch.einsum("bhcij,bhcjd->bhcid", scores.softmax(-1), chunks(self.v(x)))
        return self.o(merge_heads(out.reshape(B, H, 8, D)[:, :, :L]))


class RoutedQueryAttention(nn.Module):
    """Near miss: each query head scaled by a router's softmax gate (mixture of attention heads):
    the router feeds the query, but through a normalisation: it is no query projection."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(C, C, bias=False) for _ in range(4))
        self.router = nn.Linear(C, H, bias=False)

    def forward(self, x):
        gate = self.router(x).softmax(-1).transpose(1, 2).unsqueeze(-1)  # (B, H, L, 1)
        q, k, v = split_heads(self.q(x)) * gate, split_heads(self.k(x)), split_heads(self.v(x))
        return self.o(merge_heads((q @ k.mT).softmax(-1) @ v))


class RouterSkippedQueries(RoutedQueryAttention):
    """Near miss: the queries of tokens a router skips are zeroed (``masked_fill`` by its choice):
    the router chooses which rows count, its outputs are no query features."""

    def forward(self, x):
        keep = (self.router(x)[..., :1] > 0).unsqueeze(1)  # (B, 1, L, 1)
        q = split_heads(self.q(x)).masked_fill(~keep, 0.0)
        k, v = split_heads(self.k(x)), split_heads(self.v(x))
        return self.o(merge_heads((q @ k.mT).softmax(-1) @ v))


class ContrastiveLogits(nn.Module):
    """Near miss: log-softmax over the products of two projected views (a contrastive loss's
    logits) that weight no values: no attention."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(C, C, bias=False), nn.Linear(C, C, bias=False)

    def forward(self, x):
        return (self.a(x[0]) @ self.b(x[1]).T).log_softmax(-1)


def test_attention_through_as_strided_chunks_names_its_query_and_key():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = auto_partition(StridedChunkAttention(), X)
    whole = BlockLayout.tensor()
    expected = {"q.weight": whole, "k.weight": whole, "v.weight": ROWS, "o.weight": ROWS}
    assert mismatches(plan, expected) == {}
    (warning,) = [str(w.message) for w in caught if issubclass(w.category, PartitionWarning)]
    lines = warning.splitlines()
    assert lines[0].endswith("attention whose heads could not be read, one block each: k.weight, q.weight")
    assert len(lines) == 2  # nothing else named


def test_a_router_gating_the_queries_is_no_unread_query():
    expected = {
        "q.weight": HEADS,
        "k.weight": HEADS,
        "v.weight": ROWS,
        "o.weight": ROWS,
        "router.weight": ROWS,
    }
    check(RoutedQueryAttention(), expected)


def test_a_router_choosing_the_queries_is_no_unread_query():
    # the row flow stops at a mask computed from another projection, so q's heads go unread and
    # q is named; the router, whose output only picks rows (a mask operand), is not
    expected = {"q.weight": BlockLayout.tensor(), "k.weight": HEADS, "v.weight": ROWS, "o.weight": ROWS}
    check(RouterSkippedQueries(), expected | {"router.weight": ROWS}, allowed=("q.weight",))


def test_normalised_products_that_weight_no_values_are_no_attention():
    check(ContrastiveLogits(), {"a.weight": ROWS, "b.weight": ROWS})
