"""One small module per class of graph-reader miss (issue 9), each with hand-written layouts.

Sizes: model width C=32, H=4 heads of D=8 unless a module says otherwise; the expected layout
of every parameter is written from the module's own forward, as blocks of rows.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from partitioners import BlockLayout, PartitionWarning, auto_partition

from .partitions import mismatches

C, H, D = 32, 4, 8
X = (torch.Size([2, 5, C]),)  # batch 2, 5 tokens, float inputs


def rows(axis: int = 0) -> BlockLayout:
    return BlockLayout.rows(axis)


def heads(size: int, axis: int = 0) -> BlockLayout:
    return BlockLayout.rows(axis, group=size)


ONE, EACH = BlockLayout.tensor(), BlockLayout.element()


def split_heads(t: torch.Tensor, n: int) -> torch.Tensor:
    B, T, _ = t.shape
    return t.view(B, T, n, -1).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    B, n, T, d = t.shape
    return t.transpose(1, 2).reshape(B, T, n * d)


def read(model: nn.Module, inputs=X, quiet: bool = True, **kwargs):
    """The plan; with ``quiet``, no PartitionWarning may be raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = auto_partition(model, inputs, **kwargs)
    ours = [str(w.message) for w in caught if issubclass(w.category, PartitionWarning)]
    if quiet:
        assert not ours, ours
    return plan, ours


# ---- 1. row movements ---------------------------------------------------------------------------
class TransposedStorage(nn.Module):
    """q/k stored as (in, out) and used through ``.mT`` of their transposes."""

    def __init__(self):
        super().__init__()
        self.wq = nn.Parameter(torch.randn(C, C))  # (out, in)
        self.wk = nn.Parameter(torch.randn(C, C))
        self.v = nn.Linear(C, C)

    def forward(self, x):
        q = split_heads(x @ self.wq.mT, H)
        k = split_heads(x @ self.wk.mT, H)
        return merge_heads(F.scaled_dot_product_attention(q, k, split_heads(self.v(x), H)))


class SplitPackedWeight(nn.Module):
    """A packed q|k|v weight cut with ``split([C, 2C])`` before the projections (MHA cross-attn)."""

    def __init__(self):
        super().__init__()
        self.in_proj = nn.Parameter(torch.randn(3 * C, C))

    def forward(self, x):
        w_q, w_kv = self.in_proj.split([C, 2 * C])
        q = F.linear(x, w_q)
        k, v = F.linear(x.flip(1), w_kv).chunk(2, dim=-1)
        return merge_heads(
            F.scaled_dot_product_attention(split_heads(q, H), split_heads(k, H), split_heads(v, H))
        )


class KeyWrittenIntoFresh(nn.Module):
    """MLA-style key: a per-head part and one rope part shared by all heads, written with
    ``new_empty`` + slice assignment."""

    NOPE, ROPE = 6, 2

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(C, H * (self.NOPE + self.ROPE), bias=False)
        self.k_nope = nn.Linear(C, H * self.NOPE, bias=False)
        self.k_rope = nn.Linear(C, self.ROPE, bias=False)
        self.v = nn.Linear(C, H * D, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        q = self.q(x).view(B, T, H, -1)
        k = q.new_empty(B, T, H, self.NOPE + self.ROPE)
        k[..., : self.NOPE] = self.k_nope(x).view(B, T, H, self.NOPE)
        k[..., self.NOPE :] = self.k_rope(x).view(B, T, 1, self.ROPE)
        v = self.v(x).view(B, T, H, D)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return merge_heads(out)


class ComplexRotary(nn.Module):
    """Llama-1 style rotary: pairs viewed as complex numbers, rotated, viewed back as real."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(C, C, bias=False)
        self.k = nn.Linear(C, C, bias=False)
        self.v = nn.Linear(C, C, bias=False)
        angles = torch.outer(torch.arange(16.0), torch.ones(D // 2))
        self.register_buffer("freqs", torch.polar(torch.ones_like(angles), angles), persistent=False)

    def rotate(self, t):
        B, T, _ = t.shape
        pairs = torch.view_as_complex(t.float().reshape(B, T, H, D // 2, 2))
        return torch.view_as_real(pairs * self.freqs[:T, None, :]).flatten(3)

    def forward(self, x):
        q, k = self.rotate(self.q(x)).transpose(1, 2), self.rotate(self.k(x)).transpose(1, 2)
        return merge_heads(F.scaled_dot_product_attention(q, k, split_heads(self.v(x), H)))


class SequenceFirst(nn.Module):
    """Seq-first (T, B, C) hand-written attention: ``q.view(T, B*H, D)`` then ``bmm``."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(C, C) for _ in range(3))

    def forward(self, x):
        T, B, _ = x.shape
        q, k, v = (p(x).view(T, B * H, D).transpose(0, 1) for p in (self.q, self.k, self.v))
        probs = torch.bmm(q, k.transpose(1, 2)).softmax(-1)
        return torch.bmm(probs, v).transpose(0, 1).reshape(T, B, C)


class EinsumAttention(nn.Module):
    """``einsum('bqhd,bkhd->bhqk')`` attention."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(C, C, bias=False) for _ in range(3))

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = (p(x).view(B, T, H, D) for p in (self.q, self.k, self.v))
        probs = torch.einsum("bqhd,bkhd->bhqk", q, k).softmax(-1)
        return torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(B, T, C)


class ListIndexedHeads(nn.Module):
    """Falcon-style MQA: the fused output viewed as H+2 heads; k and v picked with ``[..., [-2], :]``."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(C, C + 2 * D, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        fused = self.qkv(x).view(B, T, H + 2, D)
        q, k, v = fused[..., :-2, :], fused[..., [-2], :], fused[..., [-1], :]
        k, v = (t.expand(B, T, H, D).transpose(1, 2) for t in (k, v))
        return merge_heads(F.scaled_dot_product_attention(q.transpose(1, 2), k, v))


class PartialRotaryEveryTwo(nn.Module):
    """GPT-J rotary on the first half of each head, pairs interleaved (``stack`` then ``flatten``)."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(C, C, bias=False) for _ in range(3))

    def rotate(self, t):  # (B, T, H, D)
        rot, rest = t[..., : D // 2], t[..., D // 2 :]
        turned = torch.stack((-rot[..., 1::2], rot[..., ::2]), dim=-1).flatten(-2)
        angle = torch.arange(t.shape[1], dtype=t.dtype, device=t.device)[:, None, None]
        return torch.cat([rot * angle.cos() + turned * angle.sin(), rest], dim=-1)

    def forward(self, x):
        B, T, _ = x.shape
        q, k = (self.rotate(p(x).view(B, T, H, D)).transpose(1, 2) for p in (self.q, self.k))
        return merge_heads(F.scaled_dot_product_attention(q, k, split_heads(self.v(x), H)))


QKV = {"q.weight": heads(D), "k.weight": heads(D), "v.weight": rows()}
ROW_MOVEMENTS = [
    (TransposedStorage, X, {"wq": heads(D), "wk": heads(D), "v.weight": rows()}),
    (
        SplitPackedWeight,
        X,
        {"in_proj": BlockLayout.segmented([(C, D, "q"), (C, D, "k"), (C, 1, "v")])},
    ),
    (
        KeyWrittenIntoFresh,
        X,
        {
            "q.weight": heads(8),
            "k_nope.weight": heads(6),
            "k_rope.weight": heads(2),  # one key part shared by all heads: one block
            "v.weight": rows(),
        },
    ),
    (ComplexRotary, X, QKV),
    (PartialRotaryEveryTwo, X, QKV),
    (SequenceFirst, (torch.Size([5, 2, C]),), {**QKV, "q.bias": EACH}),
    (EinsumAttention, X, QKV),
    (ListIndexedHeads, X, {"qkv.weight": BlockLayout.segmented([(C, D, "q"), (D, D, "k"), (D, 1, "v")])}),
]


@pytest.mark.parametrize(
    ("cls", "inputs", "expected"), ROW_MOVEMENTS, ids=lambda v: getattr(v, "__name__", "")
)
def test_rows_followed_through_data_movement(cls, inputs, expected):
    plan, _ = read(cls(), inputs)
    assert mismatches(plan, expected) == {}


# ---- 2. attention that is not a bare matmul -> softmax -> matmul --------------------------------
class ScoreChain(nn.Module):
    """Scores through softcap, mask, max subtraction, learned sink logits (cat then slice), and an
    exp / sum normalisation."""

    def __init__(self, variant: str):
        super().__init__()
        self.variant = variant
        self.q, self.k, self.v = (nn.Linear(C, C, bias=False) for _ in range(3))
        if variant == "sinks":
            self.sinks = nn.Parameter(torch.zeros(H))

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = (split_heads(p(x), H) for p in (self.q, self.k, self.v))
        s = q @ k.transpose(-2, -1) / D**0.5
        if self.variant == "softcap":
            s = torch.tanh(s / 30.0) * 30.0
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        s = s.masked_fill(~mask, float("-inf"))
        if self.variant == "sinks":
            s = torch.cat([s, self.sinks.view(1, H, 1, 1).expand(B, H, T, 1)], dim=-1)
        s = s - s.amax(dim=-1, keepdim=True)
        if self.variant == "exp_sum":
            e = s.exp()
            p = e / e.sum(dim=-1, keepdim=True)
        else:
            p = s.softmax(-1)
        if self.variant == "sinks":
            p = p[..., :-1]
        return merge_heads(p @ v)


@pytest.mark.parametrize("variant", ["softcap", "sinks", "exp_sum"])
def test_attention_found_through_score_chains(variant):
    plan, _ = read(ScoreChain(variant))  # sink logits are explained: no warning
    assert mismatches(plan, {**QKV, **({"sinks": ONE} if variant == "sinks" else {})}) == {}


# ---- 3. one key/value head broadcast to every query head inside a fused projection -------------
class FusedMQA(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(C, C + 2 * D)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split([C, D, D], dim=-1)
        k = k.view(B, T, 1, D).expand(B, T, H, D).transpose(1, 2)
        v = v.view(B, T, 1, D).expand(B, T, H, D).transpose(1, 2)
        out = F.scaled_dot_product_attention(split_heads(q, H), k, v)
        return out.transpose(1, 2).reshape(B, T, C)


def test_single_key_head_expanded_in_fused_projection():
    plan, _ = read(FusedMQA())
    want = BlockLayout.segmented([(C, D, "q"), (D, D, "k"), (D, 1, "v")])
    assert mismatches(plan, {"qkv.weight": want, "qkv.bias": EACH}) == {}


# ---- 4. data-dependent code ----------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(C, C, bias=False) for _ in range(3))

    def forward(self, x):
        q, k, v = (split_heads(p(x), H) for p in (self.q, self.k, self.v))
        return merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True))


class RoutedExperts(nn.Module):
    """Top-1 routing with ``nonzero`` and a skip decided by ``.item()``."""

    def __init__(self, n: int = 3):
        super().__init__()
        self.router = nn.Linear(C, n, bias=False)
        self.experts = nn.ModuleList(nn.Linear(C, C) for _ in range(n))

    def forward(self, x):
        flat = x.reshape(-1, C)
        choice = self.router(flat).argmax(-1)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            idx = torch.nonzero(choice == e).squeeze(-1)
            if idx.numel() == 0 or (choice == e).sum().item() == 0:
                continue
            out = out.index_add(0, idx, expert(flat[idx]))
        return out.view_as(x)


class DataDependentBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention()
        self.moe = RoutedExperts()

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.moe(x)


def test_data_dependent_routing_keeps_the_rest_of_the_graph():
    """``nonzero`` selects every token and the ``.item()`` count is at most all of them (not 0),
    so every expert runs in the trace and the whole block is read, without a warning."""
    plan, _ = read(DataDependentBlock())
    expected = {
        "attn.q.weight": heads(D),
        "attn.k.weight": heads(D),
        "attn.v.weight": rows(),
        "moe.router.weight": rows(),
        **{f"moe.experts.{i}.weight": rows() for i in range(3)},
    }
    assert mismatches(plan, expected) == {}
    assert plan["moe.experts.2.weight"].decided_by == "export (upper bounds)"


# ---- 5. uses that are not matmuls -----------------------------------------------------------------
class NonMatmulUses(nn.Module):
    """Position table read as a slice and added; 2-D expert biases after a batched matmul; a
    learned scalar; a class token."""

    E = 3

    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(16, C))
        self.cls = nn.Parameter(torch.randn(1, 1, C))
        self.gate = nn.Parameter(torch.zeros(()))
        self.w_experts = nn.Parameter(torch.randn(self.E, C, C))  # (expert, in, out)
        self.b_experts = nn.Parameter(torch.zeros(self.E, C))

    def forward(self, x):
        B, T, _ = x.shape
        x = x + self.pos[:T]
        x = torch.cat([self.cls.expand(B, 1, C), x], dim=1)
        h = x.reshape(1, -1, C).expand(self.E, -1, C)
        y = torch.bmm(h, self.w_experts) + self.b_experts[:, None, :]
        return torch.tanh(self.gate) * y.sum(0)


def test_tables_expert_biases_scalars_and_tokens():
    plan, _ = read(NonMatmulUses())  # explained: no warning
    expected = {
        "pos": rows(0),
        "cls": ONE,
        "gate": ONE,
        "w_experts": BlockLayout.rows(2, batch_axes=(0,)),
        "b_experts": EACH,
    }
    assert mismatches(plan, expected) == {}


class RelativePositionBias(nn.Module):
    """A relative-position table read through a fixed index buffer, added to the scores."""

    def __init__(self, T: int = 5):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(C, C, bias=False) for _ in range(3))
        self.table = nn.Parameter(torch.zeros(2 * T - 1, H))
        pos = torch.arange(T)
        self.register_buffer("index", (pos[:, None] - pos[None, :] + T - 1).flatten(), persistent=False)

    def forward(self, x):
        T = x.shape[1]
        q, k, v = (split_heads(p(x), H) for p in (self.q, self.k, self.v))
        bias = self.table[self.index].view(T, T, H).permute(2, 0, 1)
        return merge_heads(((q @ k.transpose(-2, -1)) + bias).softmax(-1) @ v)


def test_table_read_through_an_index_buffer():
    plan, _ = read(RelativePositionBias())
    assert mismatches(plan, {**QKV, "table": rows(0)}) == {}


# ---- containment ----------------------------------------------------------------------------------
class RaisesHalfway(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention()
        self.mlp = nn.Linear(C, C)

    def forward(self, x):
        x = self.attn(x)
        raise RuntimeError("this forward breaks halfway")


def test_forward_that_raises_gives_fallback_plan_and_warning():
    plan, notes = read(RaisesHalfway(), quiet=False)
    assert len(notes) == 1
    assert "could not be traced" in notes[0] and "this forward breaks halfway" in notes[0]
    assert "mlp.weight (structure)" in notes[0]
    assert plan["mlp.weight"].decided_by == "structure"
    assert plan["attn.q.weight"].decided_by == "export (attn)"  # reached before the raise
    assert mismatches(plan, {"attn.q.weight": heads(D), "mlp.weight": rows()}) == {}
