"""Collapsing repeated layers: it happens, and only for layers that are provably the same."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from partitioners import BlockLayout, auto_partition

from .partitions import mismatches

C = 32


@dataclass
class HeadConfig:
    heads: int


class Layer(nn.Module):
    """Attention whose head count is a non-parameter attribute: same shapes for any head count."""

    traced: set[int] = set()  # noqa: RUF012 (ids of the instances whose forward ran)

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config  # a per-layer object: equal only if its content is
        self.q, self.k, self.v = (nn.Linear(C, C, bias=False) for _ in range(3))

    def forward(self, x):
        Layer.traced.add(id(self))
        B, T, _ = x.shape
        h = self.config.heads
        q, k, v = (p(x).view(B, T, h, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        return x + F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, C)


class Stack(nn.Module):
    def __init__(self, heads: list[int]):
        super().__init__()
        self.layers = nn.ModuleList(Layer(HeadConfig(h)) for h in heads)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


X = (torch.Size([1, 4, C]),)


def count_traced_layers(model: nn.Module, collapse: bool) -> int:
    """How many distinct layers (of the traced copy) ran."""
    Layer.traced = set()
    auto_partition(model, X, collapse_repeats=collapse)
    return len(Layer.traced)


def test_identical_layers_are_traced_once():
    model = Stack([4] * 8)
    full = count_traced_layers(model, collapse=False)
    collapsed = count_traced_layers(model, collapse=True)
    assert (full, collapsed) == (8, 2)  # the first and last layer of the run stand for all
    plan = auto_partition(model, X)
    assert mismatches(plan, {f"layers.{i}.q.weight": BlockLayout.rows(0, group=8) for i in range(8)}) == {}


def test_layers_differing_by_an_attribute_are_not_merged():
    # one middle layer has 2 heads of 16: merged into its neighbours it would read 4 heads of 8
    model = Stack([4, 4, 2, 4, 4])
    plan = auto_partition(model, X)
    expected = {f"layers.{i}.k.weight": BlockLayout.rows(0, group=16 if i == 2 else 8) for i in range(5)}
    assert mismatches(plan, expected) == {}
