"""How a parameter is consumed decides its layout: one small module per use, layouts by hand.

Sizes: model width C=32, H=4 heads of D=8; inputs (2, 5, C). Each expected layout is written
from the module's own forward; near misses (a real position table, a packed q|k|v taken by
constant index) check that a reading doesn't reach where it shouldn't.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from partitioners import BlockLayout, PartitionWarning, auto_partition

from .partitions import mismatches

C, H, D = 32, 4, 8
B, T = 2, 5
X = (torch.Size([B, T, C]),)
ONE, EACH = BlockLayout.tensor(), BlockLayout.element()


def rows(axis: int = 0, batch_axes: tuple[int, ...] = ()) -> BlockLayout:
    return BlockLayout.rows(axis, batch_axes=batch_axes)


def heads(size: int = D, axis: int = 0, batch_axes: tuple[int, ...] = ()) -> BlockLayout:
    return BlockLayout.rows(axis, group=size, batch_axes=batch_axes)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, T, C) each -> (B, T, C) through H heads."""
    q, k, v = (t.view(t.shape[0], -1, H, D).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(out.shape[0], -1, C)


def read(model: nn.Module, inputs=X) -> tuple[dict[str, BlockLayout], list[str]]:
    """Each parameter's planned layout, and the PartitionWarnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = auto_partition(model, inputs)
    found = [str(w.message) for w in caught if issubclass(w.category, PartitionWarning)]
    return {name: plan[name].layout for name in plan}, found


def check(model: nn.Module, expected: dict[str, BlockLayout], inputs=X, warned: tuple[str, ...] = ()) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = auto_partition(model, inputs)
    text = "\n".join(str(w.message) for w in caught if issubclass(w.category, PartitionWarning))
    assert mismatches(plan, expected) == {}
    assert {n for n in expected if n in text} == set(warned), text


# ---- biases and scales along a projection's features, tables along positions -----------------
class PerHeadBias(nn.Module):
    """Transformer-XL's r_w_bias: an (H, D) bias added to the query viewed (B, T, H, D)."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(C, C, bias=False) for _ in range(3))
        self.bias_u = nn.Parameter(torch.randn(H, D))

    def forward(self, x):
        q = self.q(x).view(B, T, H, D) + self.bias_u
        return attend(q.reshape(B, T, C), self.k(x), self.v(x))


class PerHeadScale(nn.Module):
    """Cohere's query norm: a 2-D (H, D) scale on the query normalised per head."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(C, C, bias=False) for _ in range(3))
        self.scale = nn.Parameter(torch.ones(H, D))

    def forward(self, x):
        q = F.layer_norm(self.q(x).view(B, T, H, D), (D,)) * self.scale
        return attend(q.reshape(B, T, C), self.k(x), self.v(x))


class PositionTables(nn.Module):
    """Near miss: a (T, C) table added to token embeddings stays one block per position; a
    (1, 2, 2, C) grid added to a convolution's output one block per grid position."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, C)
        self.positions = nn.Parameter(torch.randn(T, C))
        self.patches = nn.Conv2d(3, C, 2, stride=2)
        self.grid = nn.Parameter(torch.randn(1, 2, 2, C))
        self.out = nn.Linear(C, C)

    def forward(self, ids, image):
        tokens = self.embed(ids) + self.positions
        grid = self.patches(image).permute(0, 2, 3, 1) + self.grid  # (B, 2, 2, C)
        return self.out(torch.cat([tokens, grid.flatten(1, 2)], 1))


def test_per_head_bias_is_per_element():
    check(PerHeadBias(), {"bias_u": EACH, "q.weight": heads(), "k.weight": heads(), "v.weight": rows()})


def test_per_head_scale_is_a_norm_scale():
    check(PerHeadScale(), {"scale": ONE, "q.weight": heads(), "k.weight": heads()})


def test_position_tables_stay_per_position():
    inputs = (torch.zeros(B, T, dtype=torch.long), torch.Size([B, 3, 4, 4]))
    expected = {"positions": rows(0), "grid": rows(1, batch_axes=(2,)), "embed.weight": rows(0)}
    check(PositionTables(), expected, inputs)


# ---- parameters used as activations: token sets ----------------------------------------------
class LearnedQueries(nn.Module):
    """A probe (1, 1, C) repeated over the batch as the query input of a projection, latents
    (4, C) through a LayerNorm into one, and a relative table (6, C) projected into keys."""

    def __init__(self):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, C))
        self.latents = nn.Parameter(torch.randn(4, C))
        self.table = nn.Parameter(torch.randn(6, C))
        self.q, self.k, self.v, self.pos = (nn.Linear(C, C, bias=False) for _ in range(4))

    def forward(self, x):
        probe = self.q(self.probe.repeat(B, 1, 1))
        latents = self.q(F.layer_norm(self.latents.expand(B, -1, -1), (C,)))
        keys = torch.cat([self.k(x), self.pos(self.table).expand(B, -1, -1)], 1)
        values = torch.cat([self.v(x), self.v(x), self.v(x)[:, :1]], 1)
        return attend(torch.cat([probe, latents], 1), keys, values)


class PrefixTokens(nn.Module):
    """A class token (1, 1, C) and 2 registers (1, 2, C) put before the sequence (DINOv3)."""

    def __init__(self):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, C))
        self.registers = nn.Parameter(torch.randn(1, 2, C))
        self.proj = nn.Linear(C, C)

    def forward(self, x):
        return self.proj(torch.cat([self.cls.expand(B, -1, -1), self.registers.expand(B, -1, -1), x], 1))


def test_prefix_tokens_are_one_block_per_token():
    check(PrefixTokens(), {"cls": ONE, "registers": rows(1), "proj.weight": rows(0)})


def test_parameters_fed_as_activations_are_token_sets():
    expected = {
        "probe": ONE,
        "latents": rows(0),
        "table": rows(0),
        "q.weight": heads(),
        "pos.weight": heads(),
    }
    check(LearnedQueries(), expected)


# ---- tables resized, reassembled, mixed by fixed weights ----------------------------------------
class ResizedTables(nn.Module):
    """SAM's rel_pos (R, D): resized by interpolation, read by relative index; BEiT's table
    (R + 2, H): its first R rows viewed as a grid, resized, concatenated back with the last 2,
    read by a flattened index buffer; SigLIP2's (4, C) table viewed as a 2x2 grid and resized
    by fixed bilinear weights (interpolation @ table)."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(C, C, bias=False) for _ in range(3))
        self.rel = nn.Parameter(torch.randn(2 * T - 1, D))
        self.bias_table = nn.Parameter(torch.randn(9 + 2, H))
        self.grid = nn.Parameter(torch.randn(4, C))
        self.offsets: torch.Tensor
        self.bias_index: torch.Tensor
        self.register_buffer("offsets", torch.arange(T)[:, None] - torch.arange(T) + T - 1)
        self.register_buffer(
            "bias_index", torch.randint(0, 11, (T, T), generator=torch.Generator().manual_seed(0))
        )

    def forward(self, x):
        table = self.grid.reshape(2, 2, C).reshape(4, C)
        mix = torch.linspace(0, 1, T * 4, device=x.device).reshape(T, 4).softmax(-1)  # fixed weights
        x = x + mix @ table
        q, k, v = (p(x).view(B, T, H, D).transpose(1, 2) for p in (self.q, self.k, self.v))
        rel = F.interpolate(self.rel.t()[None], size=2 * T - 1, mode="linear")[0].t()
        scores = q @ k.transpose(-1, -2) + torch.einsum("bhqd,qkd->bhqk", q, rel[self.offsets])
        square = self.bias_table[:9].reshape(1, 3, 3, H).permute(0, 3, 1, 2)
        square = F.interpolate(square, size=(3, 3), mode="bilinear").permute(0, 2, 3, 1).reshape(9, H)
        biases = torch.cat([square, self.bias_table[9:]], 0)
        scores = scores + biases[self.bias_index.view(-1)].view(T, T, H).permute(2, 0, 1)
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)


class RawInputProjection(nn.Module):
    """Near miss: ``x @ W`` on the model's input is a projection, not rows mixed by fixed weights."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(C, C))

    def forward(self, x):
        return x @ self.w


def test_resized_and_reassembled_tables_are_one_block_per_position():
    expected = {
        "rel": rows(0),
        "bias_table": rows(0),
        "grid": rows(0),
        "q.weight": heads(),
        "k.weight": heads(),
    }
    check(ResizedTables(), expected)


def test_input_times_weight_stays_a_projection():
    check(RawInputProjection(), {"w": rows(1)})


# ---- tables read along dim 1, einsum weights, experts picked one by one ----------------------
class ColumnLookup(nn.Module):
    """LeViT's attention biases (H, offsets)[:, idx]: one block per offset column."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(C, C, bias=False) for _ in range(3))
        self.biases = nn.Parameter(torch.randn(H, 3))
        self.idx: torch.Tensor
        self.register_buffer("idx", (torch.arange(T)[:, None] - torch.arange(T)).abs().clamp(max=2))

    def forward(self, x):
        q, k, v = (p(x).view(B, T, H, D).transpose(1, 2) for p in (self.q, self.k, self.v))
        scores = q @ k.transpose(-1, -2) + self.biases[:, self.idx]
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)


class EinsumWeights(nn.Module):
    """XLNet's projections: (C, H, D) weights with two output letters ('ibh,hnd->ibnd')."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Parameter(torch.randn(C, H, D)) for _ in range(4))

    def forward(self, x):
        h = x.transpose(0, 1)
        q, k, v = (torch.einsum("ibh,hnd->ibnd", h, w) for w in (self.q, self.k, self.v))
        probs = torch.einsum("ibnd,jbnd->bnij", q, k).softmax(-1)
        return torch.einsum("ibnd,hnd->ibh", torch.einsum("bnij,jbnd->ibnd", probs, v), self.o)


class LoopedExperts(nn.Module):
    """JetMoE's experts: (E, F, C) weights taken as W[i] in a Python loop."""

    def __init__(self):
        super().__init__()
        self.up = nn.Parameter(torch.randn(3, 16, C))
        self.down = nn.Parameter(torch.randn(3, C, 16))

    def forward(self, x):
        return sum(F.linear(F.gelu(F.linear(x, self.up[i])), self.down[i]) for i in range(3))


class PackedByIndex(nn.Module):
    """Near miss: q|k|v stacked (3, C, C) and taken as W[0], W[1], W[2] is no expert weight."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Parameter(torch.randn(3, C, C))

    def forward(self, x):
        return attend(*(F.linear(x, self.qkv[i]) for i in range(3)))


def test_table_indexed_along_dim_1():
    check(ColumnLookup(), {"biases": rows(1), "q.weight": heads(), "k.weight": heads()})


def test_einsum_weight_with_two_output_axes():
    expected = {"q": rows(1), "k": rows(1), "v": rows(1, batch_axes=(2,)), "o": rows(0)}
    check(EinsumWeights(), expected)


def test_experts_picked_by_constant_index_keep_the_expert_axis():
    check(LoopedExperts(), {"up": rows(1, batch_axes=(0,)), "down": rows(1, batch_axes=(0,))})


def test_packed_weight_picked_by_constant_index_is_not_an_expert():
    check(PackedByIndex(), {"qkv": ONE}, warned=("qkv",))


# ---- convolutions as projections, concatenated heads -------------------------------------------
class ConvAttention(nn.Module):
    """SqueezeBERT: kernel-1 grouped Conv1d q/k/v in (B, C, T) layout."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.post = (nn.Conv1d(C, C, 1, groups=2) for _ in range(4))

    def forward(self, x):
        x = x.transpose(1, 2)
        q, k, v = (p(x).view(B, H, D, T).transpose(2, 3) for p in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(2, 3).reshape(B, C, T)
        return self.post(out).transpose(1, 2)


class ConcatenatedHead(nn.Module):
    """MobileBERT's output head: h @ cat([E.t(), W], 0) with a narrow embedding E (V, 16)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 16)
        self.up = nn.Linear(16, C)
        self.extra = nn.Parameter(torch.randn(C - 16, 11))

    def forward(self, ids):
        h = self.up(self.embed(ids))
        return h @ torch.cat([self.embed.weight.t(), self.extra], 0)


def test_kernel_1_conv_feeding_heads_is_read_as_query_and_key():
    expected = {"q.weight": heads(), "k.weight": heads(), "v.weight": ONE, "post.weight": ONE}
    check(ConvAttention(), expected)


def test_weight_inside_a_concatenated_head_keeps_its_rows():
    inputs = (torch.zeros(B, T, dtype=torch.long),)
    check(ConcatenatedHead(), {"embed.weight": rows(0), "extra": rows(1), "up.weight": rows(0)}, inputs)


# ---- explained uses: weight norm, dtype-only reads, decay rates ----------------------------------
class WeightNormed(nn.Module):
    """weight_norm(Linear): v (the direction) is the weight, g (C, 1) its magnitudes; a scale
    whose dtype is read by ``x.type_as(scale)`` too."""

    def __init__(self):
        super().__init__()
        self.proj = weight_norm(nn.Linear(C, C, bias=False))
        self.scale = nn.Parameter(torch.ones(C))

    def forward(self, x):
        return self.proj(x).type_as(self.scale) * self.scale


class DecayedState(nn.Module):
    """RWKV's WKV state: -exp(decay) added to a running state is a decay rate (outside the
    principle: one block, named in a warning); ``first`` added to the key is a bias."""

    def __init__(self):
        super().__init__()
        self.key = nn.Linear(C, C, bias=False)
        self.decay = nn.Parameter(torch.zeros(C))
        self.first = nn.Parameter(torch.zeros(C))

    def forward(self, x):
        k = self.key(x)
        decay = -torch.exp(self.decay)
        state = torch.zeros_like(k[:, 0])
        out = []
        for t in range(T):
            state = torch.maximum(state + decay, k[:, t] + self.first)
            out.append(state)
        return torch.stack(out, 1)


def test_weight_norm_and_dtype_reads_are_explained():
    check(
        WeightNormed(),
        {
            "proj.parametrizations.weight.original1": rows(0),
            "proj.parametrizations.weight.original0": ONE,
            "scale": ONE,
        },
    )


def test_decay_rate_added_to_a_state_is_no_bias():
    check(DecayedState(), {"decay": ONE, "first": EACH, "key.weight": rows(0)}, warned=("decay",))


@pytest.mark.parametrize("model", [PerHeadBias, LearnedQueries, EinsumWeights, LoopedExperts, ConvAttention])
def test_reads_are_quiet(model):
    _, found = read(model())
    assert found == []


@pytest.mark.parametrize("warn_only", [False, True])
def test_the_plan_does_not_depend_on_the_deterministic_algorithms_setting(warn_only):
    """``Trainer(deterministic=True)`` turns it on for the process; the resized tables trace to
    other ops under it. The reader's answer is the same, and the setting is left as it was."""
    torch.manual_seed(0)
    model = ResizedTables()
    plain = auto_partition(model, X)
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        assert auto_partition(model, X) == plain
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled() == warn_only
    finally:
        torch.use_deterministic_algorithms(False)
    assert plain["bias_table"].layout == BlockLayout.rows(0)
