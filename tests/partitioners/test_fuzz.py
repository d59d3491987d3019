"""Random compositions of the supported attention ops; the reader must be exact on every one.

Each case draws head count, head size, GQA ratio, packed or separate projections, weights
stored (out, in) or transposed (in, out) and used as ``x @ W``, rotary (none, real
``rotate_half``, complex), how k/v heads are repeated, and the attention form (SDPA, matmul +
softmax, einsum). Its expected layout follows from the draw alone.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from partitioners import BlockLayout, PartitionWarning, auto_partition

from .partitions import mismatches

C, T = 24, 4


@dataclass(frozen=True)
class Draw:
    heads: int
    kv_heads: int
    head_dim: int
    packed: bool
    transposed: bool
    rotary: str  # none | real | complex
    repeat: str  # repeat_interleave | expand
    form: str  # sdpa | matmul | einsum


@st.composite
def draws(draw) -> Draw:
    kv_heads = draw(st.sampled_from([1, 2, 3]))
    heads = kv_heads * draw(st.sampled_from([1, 2, 3]))
    return Draw(
        heads=heads,
        kv_heads=kv_heads,
        head_dim=draw(st.sampled_from([2, 4, 6])),
        packed=draw(st.booleans()),
        transposed=draw(st.booleans()),
        rotary=draw(st.sampled_from(["none", "real", "complex"])),
        repeat=draw(st.sampled_from(["repeat_interleave", "expand"])),
        form=draw(st.sampled_from(["sdpa", "matmul", "einsum"])),
    )


class Weight(nn.Module):
    """A projection weight stored (out, in), or (in, out) and used as ``x @ W``."""

    def __init__(self, n_out: int, transposed: bool, n_in: int = C):
        super().__init__()
        self.transposed = transposed
        shape = (n_in, n_out) if transposed else (n_out, n_in)
        self.weight = nn.Parameter(torch.randn(shape) / n_in**0.5)

    def forward(self, x):
        return x @ self.weight if self.transposed else F.linear(x, self.weight)


class Fuzzed(nn.Module):
    def __init__(self, d: Draw):
        super().__init__()
        self.d = d
        q, kv = d.heads * d.head_dim, d.kv_heads * d.head_dim
        self.sizes = [q, kv, kv]
        if d.packed:
            self.qkv = Weight(q + 2 * kv, d.transposed)
        else:
            self.q, self.k, self.v = (Weight(n, d.transposed) for n in self.sizes)
        self.out = Weight(C, d.transposed, n_in=q)
        angles = torch.outer(torch.arange(float(T)), torch.linspace(0.1, 1.0, d.head_dim // 2))
        self.register_buffer("cos", angles.cos().repeat(1, 2), persistent=False)
        self.register_buffer("sin", angles.sin().repeat(1, 2), persistent=False)
        self.register_buffer("freqs", torch.polar(torch.ones_like(angles), angles), persistent=False)

    def rotate(self, t):  # t: (B, T, n, D)
        if self.d.rotary == "real":
            half = t.shape[-1] // 2
            rotated = torch.cat((-t[..., half:], t[..., :half]), dim=-1)
            return t * self.cos[:, None] + rotated * self.sin[:, None]
        if self.d.rotary == "complex":
            pairs = torch.view_as_complex(t.float().reshape(*t.shape[:-1], -1, 2))
            return torch.view_as_real(pairs * self.freqs[:, None]).flatten(-2)
        return t

    def repeat_kv(self, t):  # (B, kv, T, D) -> (B, heads, T, D)
        n = self.d.heads // self.d.kv_heads
        if self.d.repeat == "repeat_interleave":
            return t.repeat_interleave(n, dim=1)
        B, kv, T_, D = t.shape
        return t[:, :, None].expand(B, kv, n, T_, D).reshape(B, kv * n, T_, D)

    def forward(self, x):
        d, (B, T_, _) = self.d, x.shape
        if d.packed:
            q, k, v = self.qkv(x).split(self.sizes, dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q = self.rotate(q.view(B, T_, d.heads, d.head_dim)).transpose(1, 2)
        k = self.repeat_kv(self.rotate(k.view(B, T_, d.kv_heads, d.head_dim)).transpose(1, 2))
        v = self.repeat_kv(v.view(B, T_, d.kv_heads, d.head_dim).transpose(1, 2))
        if d.form == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif d.form == "matmul":
            o = (q @ k.transpose(-2, -1) / d.head_dim**0.5).softmax(-1) @ v
        else:
            probs = torch.einsum("bhqd,bhkd->bhqk", q, k).softmax(-1)
            o = torch.einsum("bhqk,bhkd->bhqd", probs, v)
        return self.out(o.transpose(1, 2).reshape(B, T_, -1))


def expected(d: Draw) -> dict[str, BlockLayout]:
    axis = 1 if d.transposed else 0
    q, kv, hd = d.heads * d.head_dim, d.kv_heads * d.head_dim, d.head_dim
    out = {"out.weight": BlockLayout.rows(axis)}
    if d.packed:
        out["qkv.weight"] = BlockLayout.segmented([(q, hd, "q"), (kv, hd, "k"), (kv, 1, "v")], axis=axis)
    else:
        out["q.weight"] = BlockLayout.rows(axis, group=hd)
        out["k.weight"] = BlockLayout.rows(axis, group=hd)
        out["v.weight"] = BlockLayout.rows(axis)
    return out


@settings(max_examples=30, deadline=None, derandomize=True)
@given(draws())
def test_reader_exact_on_random_attention(d: Draw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = auto_partition(Fuzzed(d), (torch.Size([2, T, C]),))
    assert not [w for w in caught if issubclass(w.category, PartitionWarning)]
    assert mismatches(plan, expected(d)) == {}, d
