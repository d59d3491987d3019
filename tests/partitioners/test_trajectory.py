"""AdamMini with the auto plan follows a straightforward reference of DESIGN §1 on a tiny GPT-2."""

from __future__ import annotations

import copy
import math

import torch
import transformers

from lightning_adam_mini import AdamMini
from partitioners import auto_partition

E, HEAD = 64, 16  # the tiny GPT-2 below: 4 heads of 16


def by_column(shape: tuple[int, ...], column_block) -> torch.Tensor:
    """Block ids for a GPT-2 Conv1D weight (in, out): its outputs are its columns."""
    rows, cols = shape
    return torch.tensor([[column_block(j) for j in range(cols)] for _ in range(rows)])


def qkv_column(j: int) -> int:
    """c_attn's columns: q (4 heads of 16), k (4 heads of 16), v (one block per column)."""
    if j < E:
        return j // HEAD
    if j < 2 * E:
        return 4 + (j - E) // HEAD
    return 8 + (j - 2 * E)


def hand_block_ids(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Each GPT-2 parameter's blocks, written from DESIGN §2 and GPT-2's modeling code."""
    n = math.prod(shape)
    if name.endswith("bias"):
        return torch.arange(n).view(shape)  # biases: per element
    if ".ln_" in name:
        return torch.zeros(shape, dtype=torch.long)  # norm scales: one block
    if name in ("transformer.wte.weight", "transformer.wpe.weight"):
        return torch.arange(shape[0])[:, None].expand(shape)  # tables: per row (token, position)
    if name.endswith("attn.c_attn.weight"):
        return by_column(shape, qkv_column)
    if name.endswith(("attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")):
        return by_column(shape, lambda j: j)  # per output neuron (column)
    raise AssertionError(f"no hand-written blocks for {name}")


class ReferenceAdamMini:
    """Per-parameter loops over hand-written block ids: m per element, v per block (DESIGN §1)."""

    def __init__(self, named, lr, betas, eps, weight_decay):
        self.params = [(p, hand_block_ids(n, tuple(p.shape))) for n, p in named]
        self.lr, (self.b1, self.b2), self.eps, self.wd = lr, betas, eps, weight_decay
        self.m = [torch.zeros_like(p) for p, _ in self.params]
        self.v = [torch.zeros(int(ids.max()) + 1, dtype=p.dtype) for p, ids in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for (p, ids), m, v in zip(self.params, self.m, self.v):
            g = p.grad
            if p.ndim >= 2:
                p.mul_(1 - self.lr * self.wd)
            m.mul_(self.b1).add_((1 - self.b1) * g)
            n = len(v)
            sq_sum = v.new_zeros(n).index_add_(0, ids.flatten(), (g * g).flatten())
            count = v.new_zeros(n).index_add_(0, ids.flatten(), g.new_ones(g.numel()))
            v.mul_(self.b2).add_((1 - self.b2) * sq_sum / count)
            denom = (v[ids] / (1 - self.b2**self.t)).sqrt() + self.eps
            p.sub_(self.lr / (1 - self.b1**self.t) * m / denom)


def test_auto_plan_trajectory_matches_reference():
    # float64: the key bias gets a gradient that is zero up to rounding (softmax ignores it), and
    # Adam normalizes that noise into lr-sized steps; in float32 two correct implementations
    # diverge there by ~1e-5. In float64 the noise stays far below the tolerance.
    cfg = transformers.GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=4,
        vocab_size=128,
        n_positions=32,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).double()
    reference = copy.deepcopy(model)
    data = torch.randint(0, 128, (10, 4, 16), generator=torch.Generator().manual_seed(1))
    plan = auto_partition(model, (data[0],))
    assert plan["transformer.h.0.attn.c_attn.weight"].role == "qkv"
    hyper = dict(lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    opt = AdamMini(model, partition=plan, **hyper)
    ref = ReferenceAdamMini(list(reference.named_parameters()), **hyper)
    for batch in data:
        for net, step in ((model, opt.step), (reference, ref.step)):
            net.zero_grad(set_to_none=True)
            net(batch, labels=batch).loss.backward()
            step()
    worst = max((a - b).abs().max().item() for a, b in zip(model.parameters(), reference.parameters()))
    assert worst <= 1e-6, worst
