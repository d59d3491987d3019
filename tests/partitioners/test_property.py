"""Property: any stack of linear / attention / norm / embedding modules gets a plan that covers
every trainable parameter exactly once, with layouts that fit the shapes."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from partitioners import auto_partition

D = 16


class Attention(nn.Module):
    def __init__(self, heads: int, fused: bool, bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(D, 3 * D, bias=bias) if fused else None
        self.q, self.k, self.v = (None,) * 3 if fused else (nn.Linear(D, D, bias=bias) for _ in range(3))
        self.proj = nn.Linear(D, D, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, -1) if self.qkv is not None else (self.q(x), self.k(x), self.v(x))
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


LAYERS = {
    "linear": lambda d: nn.Linear(D, D, bias=d(st.booleans())),
    "attention": lambda d: Attention(d(st.sampled_from([1, 2, 4, 8])), d(st.booleans()), d(st.booleans())),
    "layernorm": lambda d: nn.LayerNorm(D, elementwise_affine=True, bias=d(st.booleans())),
    "rmsnorm": lambda d: nn.RMSNorm(D),
    "gelu": lambda d: nn.GELU(),
}


class Stack(nn.Module):
    def __init__(self, layers: list[nn.Module], tie: bool):
        super().__init__()
        self.embed = nn.Embedding(32, D)
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(D, 32, bias=False)
        if tie:
            self.head.weight = self.embed.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for layer in self.layers:
            x = x + layer(x) if isinstance(layer, Attention) else layer(x)
        return self.head(x)


@st.composite
def stacks(draw) -> Stack:
    kinds = draw(st.lists(st.sampled_from(sorted(LAYERS)), min_size=0, max_size=6))
    torch.manual_seed(0)
    model = Stack([LAYERS[k](draw) for k in kinds], draw(st.booleans()))
    for p in model.parameters():
        if draw(st.integers(0, 9)) == 0:
            p.requires_grad_(False)
    return model


@settings(max_examples=25, deadline=None)
@given(model=stacks(), seq=st.integers(1, 6))
def test_plan_covers_every_trainable_parameter_once(model, seq):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # everything is explained by the graph
        plan = auto_partition(model, (torch.Size([2, seq]),))
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert list(plan) == [n for n, _ in trainable]
    plan.check_params(trainable)
    for name, p in trainable:
        entry = plan[name]
        entry.layout.check(p.shape)
        assert entry.decided_by == "export"
        assert 1 <= entry.num_blocks <= p.numel()
        if entry.role in ("query", "key"):
            heads = {m.heads for m in model.modules() if isinstance(m, Attention)}
            assert entry.layout.group in {D // h for h in heads}
    for module in model.modules():
        if (
            isinstance(module, nn.Linear)
            and module.weight.requires_grad
            and module.weight is not model.embed.weight
        ):
            name = next(n for n, p in model.named_parameters() if p is module.weight)
            assert plan[name].layout.axis == 0 and plan[name].layout.kind == "rows"
