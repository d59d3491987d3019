"""auto_partition on plain torch models: nanoGPT, ResNet-18, TransformerEncoderLayer, and every
spelling of a linear map and of attention."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from partitioners import BlockLayout, auto_partition
from tests.models.nanogpt import gpt
from tests.models.resnet import resnet18

ROWS0, ROWS1 = BlockLayout.rows(0), BlockLayout.rows(1)
NORM, BIAS = BlockLayout.tensor(), BlockLayout.element()


def plan_of(model, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        return auto_partition(model, args)


def layouts(plan) -> dict[str, tuple[str, BlockLayout]]:
    return {n: (e.role, e.layout) for n, e in plan.items()}


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_nanogpt(attention):
    model = gpt(attention)
    plan = plan_of(model, torch.randint(0, 96, (2, 8)))
    qkv = BlockLayout.segmented([(64, 16, "q"), (64, 16, "k"), (64, 1, "v")])
    want = {"transformer.wte.weight": ("embedding", ROWS0), "transformer.wpe.weight": ("embedding", ROWS0)}
    for i in range(2):
        h = f"transformer.h.{i}."
        want |= {
            h + "ln_1.weight": ("norm", NORM),
            h + "ln_1.bias": ("bias", BIAS),
            h + "attn.c_attn.weight": ("qkv", qkv),
            h + "attn.c_attn.bias": ("bias", BIAS),
            h + "attn.c_proj.weight": ("attn_out", ROWS0),
            h + "attn.c_proj.bias": ("bias", BIAS),
            h + "ln_2.weight": ("norm", NORM),
            h + "ln_2.bias": ("bias", BIAS),
            h + "mlp.c_fc.weight": ("linear", ROWS0),
            h + "mlp.c_fc.bias": ("bias", BIAS),
            h + "mlp.c_proj.weight": ("linear", ROWS0),
            h + "mlp.c_proj.bias": ("bias", BIAS),
        }
    want |= {"transformer.ln_f.weight": ("norm", NORM), "transformer.ln_f.bias": ("bias", BIAS)}
    assert layouts(plan) == want  # lm_head is tied to wte: not listed twice


def test_resnet18():
    model = resnet18(num_classes=10, width=8)
    plan = plan_of(model, torch.Size([1, 3, 32, 32]))
    for name, p in model.named_parameters():
        entry = plan[name]
        if name == "fc.weight":
            assert (entry.role, entry.layout) == ("output", ROWS0)
        elif p.ndim == 4:
            # one block per conv tensor: the default chosen by benchmarks/conv_blocks.py
            assert (entry.role, entry.layout) == ("conv", BlockLayout.tensor()), name
        elif name.endswith("weight"):
            assert (entry.role, entry.layout) == ("norm", NORM), name
        else:
            assert (entry.role, entry.layout) == ("bias", BIAS), name
    assert len(plan) == 62


def test_transformer_encoder_layer_packed_in_proj():
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
    plan = plan_of(layer, torch.randn(2, 5, 32))
    assert layouts(plan) == {
        "self_attn.in_proj_weight": (
            "qkv",
            BlockLayout.segmented([(32, 8, "q"), (32, 8, "k"), (32, 1, "v")]),
        ),
        "self_attn.in_proj_bias": ("bias", BIAS),
        "self_attn.out_proj.weight": ("attn_out", ROWS0),
        "self_attn.out_proj.bias": ("bias", BIAS),
        "linear1.weight": ("linear", ROWS0),
        "linear1.bias": ("bias", BIAS),
        "linear2.weight": ("linear", ROWS0),
        "linear2.bias": ("bias", BIAS),
        "norm1.weight": ("norm", NORM),
        "norm1.bias": ("bias", BIAS),
        "norm2.weight": ("norm", NORM),
        "norm2.bias": ("bias", BIAS),
    }


class Spellings(nn.Module):
    """Attention with per-head interleaved fused q|k|v stored as ``x @ W`` (einsum), a multi-query
    projection, hand-written attention with ``baddbmm``, and linear maps in every spelling."""

    def __init__(self, d: int = 32, heads: int = 4, head: int = 6):
        super().__init__()
        self.heads, self.head = heads, head
        self.qkv = nn.Parameter(torch.randn(d, heads * 3 * head))  # x @ W, (q_h k_h v_h) per head
        self.q = nn.Parameter(torch.randn(heads * head, d))  # W @ x^T spelling
        self.kv = nn.Parameter(torch.randn(2 * head, d))  # multi-query: one k head, one v head
        self.out = nn.Parameter(torch.randn(d, 2 * heads * head))  # mm
        self.up = nn.Parameter(torch.randn(2, d, d))  # bmm over a stack
        self.scale = nn.Parameter(torch.ones(d))
        self.shift = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H, hd = self.heads, self.head
        qkv = torch.einsum("btc,cf->btf", x, self.qkv).view(B, T, H, 3, hd)
        q1, k1, v1 = qkv.unbind(3)  # (B, T, H, hd)
        y1 = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q1, k1, v1)))
        q2 = torch.matmul(self.q, x.transpose(1, 2)).transpose(1, 2)  # (B, T, H*hd)
        q2 = q2.reshape(B, T, H, hd).permute(0, 2, 1, 3).reshape(B * H, T, hd)
        k2, v2 = F.linear(x, self.kv).chunk(2, dim=-1)  # (B, T, hd) each
        k2 = k2.repeat_interleave(H, dim=0)
        v2 = v2.repeat_interleave(H, dim=0)
        scores = torch.baddbmm(torch.zeros(B * H, T, T), q2, k2.transpose(1, 2), alpha=1 / math.sqrt(hd))
        y2 = torch.bmm(scores.softmax(-1), v2).view(B, H, T, hd)
        y = torch.cat([y1, y2], -1).transpose(1, 2).reshape(B * T, 2 * H * hd)
        h = torch.mm(y, self.out.t()).view(B, T, C)
        h = torch.bmm(h.transpose(0, 1).reshape(1, B * T, C).expand(2, -1, -1), self.up).sum(0)
        return (h.view(B, T, C) * self.scale + self.shift).mean()


def test_every_spelling():
    model = Spellings()
    plan = plan_of(model, torch.randn(2, 5, 32))
    got = layouts(plan)
    assert got["qkv"] == (
        "qkv",
        BlockLayout.segmented([(6, 6, "q"), (6, 6, "k"), (6, 1, "v")], axis=1, repeat=4),
    )
    assert got["q"] == ("query", BlockLayout.rows(0, group=6))
    assert got["kv"] == ("qkv", BlockLayout.segmented([(6, 6, "k"), (6, 1, "v")]))
    assert got["out"] == ("attn_out", ROWS0)
    assert got["up"] == ("expert", BlockLayout.rows(2, batch_axes=(0,)))
    assert got["scale"] == ("norm", NORM)
    assert got["shift"] == ("bias", BIAS)


class Unexplained(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.odd = nn.Parameter(torch.zeros(4, 8))  # a running sum of it is added: unexplained
        self.unused = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(x + self.odd.cumsum(0))


def test_unexplained_and_unused_parameters_warn():
    model = Unexplained()
    with pytest.warns(UserWarning) as record:
        plan = auto_partition(model, (torch.randn(2, 4, 8),))
    text = str(record[0].message)
    assert "odd" in text and "unused.weight (structure)" in text and "unused.bias" in text
    assert (plan["odd"].role, plan["odd"].layout, plan["odd"].decided_by) == ("other", NORM, "export")
    assert (plan["unused.weight"].layout, plan["unused.weight"].decided_by) == (ROWS0, "structure")
    assert plan["lin.weight"].decided_by == "export"


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.lin = nn.Linear(8, 8)
        self.wq = nn.Parameter(torch.zeros(8, 8))

    def forward(self, x):
        h = self.emb(x)
        if float(h.sum()) > 0:  # a float read from the data has no upper bound: no tracer follows it
            h = h * 2
        return self.lin(h) @ self.wq


def test_untraceable_model_falls_back_without_crashing():
    model = DataDependent()
    with pytest.warns(UserWarning, match="could not be traced"):
        plan = auto_partition(model, (torch.randint(0, 10, (2, 3)),))
    # the embedding ran before the branch: re-traced on its own; the rest never ran on meta
    assert (plan["emb.weight"].layout, plan["emb.weight"].decided_by) == (ROWS0, "export (emb)")
    assert plan["lin.bias"].decided_by == "structure"
    assert (plan["wq"].role, plan["wq"].decided_by) == ("query", "names")


def test_frozen_parameters_are_left_out():
    model = gpt()
    model.transformer.wpe.weight.requires_grad_(False)
    plan = plan_of(model, torch.randint(0, 96, (1, 4)))
    assert "transformer.wpe.weight" not in plan and "transformer.wte.weight" in plan


def test_user_model_untouched():
    model = gpt().train()
    model.transformer.h[0].mlp.c_fc.weight.requires_grad_(False)
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    before = {
        n: (p.device, p.dtype, p.requires_grad, p.detach().clone()) for n, p in model.named_parameters()
    }
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    hooks = dict(model._forward_hooks)
    auto_partition(model, (torch.randint(0, 96, (2, 8)),))
    assert model.training and all(m.training for m in model.modules())
    assert dict(model._forward_hooks) == hooks and not calls
    for n, p in model.named_parameters():
        device, dtype, grad, data = before[n]
        assert (p.device, p.dtype, p.requires_grad) == (device, dtype, grad) and torch.equal(p, data), n
        assert p.grad is None
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    handle.remove()


def test_fx_tracer_when_export_refuses(monkeypatch):
    import partitioners.trace as trace_module

    def refuse(*args, **kwargs):
        raise RuntimeError("export refused")

    tracers = dict(trace_module.TRACERS)
    monkeypatch.setattr(trace_module, "TRACERS", (("export", refuse), ("fx", tracers["fx"])))
    model = gpt("manual")
    plan = plan_of(model, torch.randint(0, 96, (2, 8)))
    assert {e.decided_by for e in plan.values()} == {"fx"}
    assert plan["transformer.h.1.attn.c_attn.weight"].layout == BlockLayout.segmented(
        [(64, 16, "q"), (64, 16, "k"), (64, 1, "v")]
    )
    monkeypatch.undo()
    assert {
        n: (e.role, e.layout) for n, e in auto_partition(model, (torch.randint(0, 96, (2, 8)),)).items()
    } == layouts(plan)
