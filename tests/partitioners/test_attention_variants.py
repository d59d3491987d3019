"""Attention written without ``softmax(q @ k^T) @ v``: linear attention, relative-position score
terms, decomposed relative positions; and the near misses that must not be read as attention.

Sizes: model width C=32, H=4 heads of D=8, T=6 tokens. Every expected layout is written by hand
from the module's forward: q/k projections one block per head, v and the rest one per row.
"""

from __future__ import annotations

import math
import re
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from partitioners import BlockLayout, PartitionWarning, auto_partition
from partitioners.attention import attention_sites
from partitioners.row_flow import index_labels, propagate

from .partitions import mismatches

C, H, D, T = 32, 4, 8, 6
X = (torch.Size([2, T, C]),)
ROWS, HEADS = BlockLayout.rows(), BlockLayout.rows(group=D)
#: a fused projection viewed (B, T, H, 3D) and split per head into q | k | v
PER_HEAD_QKV = BlockLayout.segmented([(D, D, "q"), (D, D, "k"), (D, 1, "v")], repeat=H)


def split_heads(t: torch.Tensor) -> torch.Tensor:
    B, L, _ = t.shape
    return t.view(B, L, H, -1).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    B, _, L, _ = t.shape
    return t.transpose(1, 2).reshape(B, L, -1)


def check(model: nn.Module, expected: dict[str, BlockLayout], allowed: tuple[str, ...] = ()) -> None:
    """The plan has the ``expected`` layouts and a warning names only ``allowed`` parameters."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = auto_partition(model, X)
    text = "\n".join(str(w.message) for w in caught if issubclass(w.category, PartitionWarning))
    named = {n for n, _ in model.named_parameters() if re.search(rf"(?<![\w.]){re.escape(n)}(?![\w.])", text)}
    assert named <= set(allowed), text
    assert mismatches(plan, expected) == {}


# ---- 1. linear attention (no normalisation) -----------------------------------------------------
class LightningAttention(nn.Module):
    """MiniMax-style: fused qkv -> SiLU -> per-head q | k | v; ``(q k^T * decay) v`` plus a
    carried ``k^T v`` state read by ``q``; no softmax."""

    decay: torch.Tensor

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(C, 3 * C, bias=False)
        self.out = nn.Linear(C, C, bias=False)
        self.register_buffer("decay", torch.rand(H, T, T).tril())

    def forward(self, x):
        B, L, _ = x.shape
        q, k, v = F.silu(self.qkv(x)).view(B, L, H, 3 * D).transpose(1, 2).split(D, dim=-1)
        intra = (q @ k.mT * self.decay) @ v
        state = k.mT @ v
        return self.out(merge_heads(intra + q @ state))


class ConvDeltaRule(nn.Module):
    """Qwen3.5-style: q | k | v through a depthwise causal Conv1d, SiLU, q/k L2-normed, padded to
    a chunk of 8; the chunk's ``k_beta k^T`` products (``attn @ k`` mixes tokens: no query)
    and ``(q k^T * decay) @ v_new``."""

    decay: torch.Tensor

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(C, 3 * C, bias=False)
        self.beta = nn.Linear(C, H, bias=False)
        self.conv = nn.Conv1d(3 * C, 3 * C, 3, groups=3 * C, padding=2, bias=False)
        self.out = nn.Linear(C, C, bias=False)
        self.register_buffer("decay", torch.rand(H, 8, 8).tril())

    def forward(self, x):
        B, L, _ = x.shape
        mixed = F.silu(self.conv(self.qkv(x).transpose(1, 2))[..., :L]).transpose(1, 2)
        q, k, v = (F.pad(split_heads(t), (0, 0, 0, 8 - L)) for t in mixed.split(C, dim=-1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        beta = F.pad(self.beta(x).sigmoid().transpose(1, 2), (0, 8 - L)).unsqueeze(-1)
        attn = -(k * beta) @ k.mT * self.decay
        k_cumdecay = attn @ (k * beta)  # a product of scores and keys, then against the state
        state = x.new_zeros(B, H, D, D)
        v_new = attn @ (v * beta) - k_cumdecay @ state
        out = (q @ k.mT * self.decay) @ v_new
        return self.out(merge_heads(out[:, :, :L]))


def test_linear_attention_reads_per_head_q_and_k_of_a_fused_projection():
    check(LightningAttention(), {"qkv.weight": PER_HEAD_QKV, "out.weight": ROWS})


def test_linear_attention_through_a_depthwise_conv_and_a_chunked_delta_rule():
    fused = BlockLayout.segmented([(C, D, "q"), (C, D, "k"), (C, 1, "v")])
    expected = {
        "qkv.weight": fused,
        "beta.weight": ROWS,
        "out.weight": ROWS,
        "conv.weight": BlockLayout.tensor(),
    }
    check(ConvDeltaRule(), expected)


class PerHeadGatedMLP(nn.Module):
    """Near miss: per-head weights in batched matmuls (``x_h W1_h * g_h) W2_h``): two contractions
    in a row over the same axis chain, but with weights, not a query and a key."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(C, C, bias=False)
        self.gate = nn.Linear(C, C, bias=False)
        self.w1 = nn.Parameter(torch.randn(H, D, D))
        self.w2 = nn.Parameter(torch.randn(H, D, D))

    def forward(self, x):
        h = (split_heads(self.inp(x)) @ self.w1.unsqueeze(0)) * split_heads(self.gate(x)).sigmoid()
        return merge_heads(h @ self.w2.transpose(1, 2).unsqueeze(0))


def test_per_head_weight_products_are_no_attention():
    plan = auto_partition(PerHeadGatedMLP(), X)
    assert {plan[n].role for n in ("inp.weight", "gate.weight")} == {"linear"}
    assert mismatches(plan, {"inp.weight": ROWS, "gate.weight": ROWS}) == {}


def _sites(f, *shapes: tuple[int, ...]) -> list[tuple[str, str, str]]:
    """(query, key, value) node names of the sites of ``f`` run on ``sin`` of fake inputs (the
    inputs themselves would be placeholders, which the reader takes for weights)."""
    traced = make_fx(lambda *xs: f(*(t.sin() for t in xs)), tracing_mode="fake", pre_dispatch=True)
    gm = traced(*(torch.zeros(s) for s in shapes))
    return [(s.query.name, s.key.name, s.value.name) for s in attention_sites(gm.graph)]


def test_unnormalised_site_needs_a_head_axis_and_the_key_axis_contracted():
    heads = (2, H, T, D)
    # (q k^T) v per head: one site; the names are those of make_fx's nodes for sin(q), k^T, sin(v)
    assert _sites(lambda q, k, v: (q @ k.mT * 0.5) @ v, heads, heads, heads) == [("sin", "m_t", "sin_2")]
    # the same without a head (batch) axis: 2-D products are no evidence of per-head attention
    assert _sites(lambda q, k, v: (q @ k.mT * 0.5) @ v, (T, D), (T, D), (T, D)) == []
    # the carried state q (k^T v): the product is contracted over its key-feature axis, not over
    # the axis of the second operand's rows: no site read from it (its q.k contraction comes second)
    assert _sites(lambda q, k, v: q @ (k.mT @ v), heads, heads, heads) == []


# ---- 5. relative-position score terms ------------------------------------------------------------
def sinusoids(n: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(1e4) * torch.arange(0, C, 2) / C)
    return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1)


class Disentangled(nn.Module):
    """DeBERTa-style: content scores plus c2p (q . pos_k, gathered by relative distance) and p2c
    (k . pos_q, gathered, transposed), heads in the batch of ``bmm``."""

    rel: torch.Tensor
    idx: torch.Tensor

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(C, C) for _ in range(3))
        self.pos_k, self.pos_q = nn.Linear(C, C), nn.Linear(C, C)
        self.register_buffer("rel", sinusoids(2 * T))
        idx = (torch.arange(T)[:, None] - torch.arange(T)[None, :] + T).clamp(0, 2 * T - 1)
        self.register_buffer("idx", idx.expand(2 * H, T, T).contiguous())

    def forward(self, x):
        B = x.shape[0]
        q, k, v = (split_heads(f(x)).flatten(0, 1) for f in (self.q, self.k, self.v))
        pk = split_heads(self.pos_k(self.rel)[None].expand(B, -1, -1)).flatten(0, 1)
        pq = split_heads(self.pos_q(self.rel)[None].expand(B, -1, -1)).flatten(0, 1)
        c2p = torch.gather(torch.bmm(q, pk.mT), -1, self.idx)
        p2c = torch.gather(torch.bmm(k, pq.mT), -1, self.idx).transpose(-1, -2)
        probs = torch.softmax((torch.bmm(q, k.mT) + c2p + p2c) / math.sqrt(3 * D), dim=-1)
        return (probs @ v).view(B, H, T, D).transpose(1, 2).reshape(B, T, C)


class SkewedPositionsInMask(nn.Module):
    """Transformer-XL / Conformer style: ``(q + v_bias) . p`` over relative positions, skewed by
    pad/view/slice, passed to SDPA as the additive mask."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(C, C) for _ in range(3))
        self.pos = nn.Linear(C, C, bias=False)
        self.register_buffer("rel", sinusoids(2 * T - 1))

    def forward(self, x):
        B = x.shape[0]
        q, k, v = (split_heads(f(x)) for f in (self.q, self.k, self.v))
        p = split_heads(self.pos(self.rel)[None])
        s = F.pad(q @ p.mT, (1, 0)).view(B, H, 2 * T, T)[:, :, 1:].reshape(B, H, T, 2 * T - 1)
        return merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=s[..., :T]))


class SharedPositionBias(nn.Module):
    """Near miss: a position bias from a contraction with no head axis (``mm`` of two position
    projections, (T, T), broadcast over heads): a bias, not a per-head bilinear form."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(C, C) for _ in range(3))
        self.pos_a, self.pos_b = nn.Linear(C, C, bias=False), nn.Linear(C, C, bias=False)
        self.register_buffer("table", sinusoids(T))

    def forward(self, x):
        q, k, v = (split_heads(f(x)) for f in (self.q, self.k, self.v))
        bias = self.pos_a(self.table) @ self.pos_b(self.table).mT
        return merge_heads(torch.softmax(q @ k.mT + bias, dim=-1) @ v)


QKV_HEADS = {"q.weight": HEADS, "k.weight": HEADS, "v.weight": ROWS}


def test_disentangled_position_projections_are_per_head():
    check(Disentangled(), QKV_HEADS | {"pos_k.weight": HEADS, "pos_q.weight": HEADS})


def test_skewed_relative_position_keys_in_an_sdpa_mask_are_per_head():
    check(SkewedPositionsInMask(), QKV_HEADS | {"pos.weight": HEADS})


def test_position_bias_without_a_head_axis_is_no_key():
    check(SharedPositionBias(), QKV_HEADS | {"pos_a.weight": ROWS, "pos_b.weight": ROWS})


# ---- 8. decomposed relative positions ------------------------------------------------------------
class DecomposedRelPos(nn.Module):
    """ViTDet-style on a 2 x 3 grid: fused qkv reshaped (B, T, 3, H, D); the queries contracted
    with rel_h/rel_w tables read by index; scores viewed (B*H, qh, qw, kh, kw), the two terms
    added, viewed back before the softmax."""

    idx_h: torch.Tensor
    idx_w: torch.Tensor

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(C, 3 * C)
        self.rel_h = nn.Parameter(torch.randn(3, D))
        self.rel_w = nn.Parameter(torch.randn(5, D))
        self.register_buffer("idx_h", torch.arange(2)[:, None] - torch.arange(2)[None, :] + 1)
        self.register_buffer("idx_w", torch.arange(3)[:, None] - torch.arange(3)[None, :] + 2)

    def forward(self, x):
        B = x.shape[0]
        q, k, v = self.qkv(x).reshape(B, T, 3, H, D).permute(2, 0, 3, 1, 4).reshape(3, B * H, T, D).unbind(0)
        scores = (q * D**-0.5) @ k.mT
        r_q = q.reshape(B * H, 2, 3, D)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, self.rel_h[self.idx_h])
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, self.rel_w[self.idx_w])
        scores = (scores.view(B * H, 2, 3, 2, 3) + rel_h[..., None] + rel_w[..., None, :]).view(B * H, T, T)
        return (scores.softmax(-1) @ v).view(B, H, T, D).transpose(1, 2).reshape(B, T, C)


def test_decomposed_relative_positions_keep_the_fused_key_heads():
    fused = BlockLayout.segmented([(C, D, "q"), (C, D, "k"), (C, 1, "v")])
    check(DecomposedRelPos(), {"qkv.weight": fused}, allowed=("rel_h", "rel_w"))


# ---- the row flow into linear attention ----------------------------------------------------------
def _labels_after(f, *shapes: tuple[int, ...]) -> dict[str, list]:
    """Labels of every node past ``linear`` (each element: the row of ``w`` that produced it)."""
    gm = make_fx(f, tracing_mode="fake", pre_dispatch=True)(*(torch.zeros(s) for s in shapes))
    nodes = {n.name: n for n in gm.graph.nodes}
    labels = index_labels(nodes["linear"], -1)
    assert labels is not None
    flow = propagate(nodes["linear"], labels)
    return {
        n.name: flow.labels[n].tolist() for n in gm.graph.nodes if n in flow.labels and n.name != "linear"
    }


def test_rows_pass_activations_constant_pads_and_depthwise_convs_only():
    # (1, 2 tokens, 3 rows) -> silu -> channels first -> depthwise conv (1 tap, pads 1 each
    # side: 4 positions) -> pad 1 position at the end
    def depthwise(x, w, taps):
        return F.pad(F.conv1d(F.silu(F.linear(x, w)).transpose(1, 2), taps, padding=1, groups=3), (0, 1))

    found = _labels_after(depthwise, (1, 2, 4), (3, 4), (3, 1, 1))
    assert found["silu"] == [[[0, 1, 2], [0, 1, 2]]]
    assert found["conv1d"] == [[[0] * 4, [1] * 4, [2] * 4]]
    assert found["pad"] == [[[0, 0, 0, 0, -1], [1, 1, 1, 1, -1], [2, 2, 2, 2, -1]]]
    # a conv that sums channels holds no single row per channel: the rows end there
    found = _labels_after(
        lambda x, w, k: F.conv1d(F.linear(x, w).transpose(1, 2), k), (1, 2, 4), (3, 4), (3, 3, 1)
    )
    assert "conv1d" not in found
