"""AdamMini with the auto plan follows a straightforward reference of DESIGN §1 on a tiny GPT-2."""

from __future__ import annotations

import copy
import math

import torch
import transformers

from lightning_adam_mini import AdamMini
from partitioners import BlockLayout, auto_partition


def block_ids(layout: BlockLayout, shape: tuple[int, ...]) -> torch.Tensor:
    """The block index of every element, computed from the layout alone."""
    if layout.kind == "tensor":
        return torch.zeros(shape, dtype=torch.long)
    if layout.kind == "element":
        return torch.arange(math.prod(shape)).view(shape)
    rows = layout.row_to_block(shape)
    rows = torch.arange(shape[layout.axis]) if rows is None else torch.tensor(rows)
    n_row_blocks = int(rows.max()) + 1
    ids = torch.zeros(shape, dtype=torch.long)
    index = torch.meshgrid(*(torch.arange(s) for s in shape), indexing="ij")
    batch = torch.zeros(shape, dtype=torch.long)
    for axis in layout.batch_axes:
        batch = batch * shape[axis] + index[axis]
    ids = batch * n_row_blocks + rows[index[layout.axis]]
    return ids


class ReferenceAdamMini:
    """Per-parameter loops over explicit block ids: m per element, v per block (DESIGN §1)."""

    def __init__(self, named, plan, lr, betas, eps, weight_decay):
        self.params = [(p, block_ids(plan[n].layout, tuple(p.shape))) for n, p in named]
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
    ref = ReferenceAdamMini([(n, p) for n, p in reference.named_parameters()], plan, **hyper)
    for batch in data:
        for net, step in ((model, opt.step), (reference, ref.step)):
            net.zero_grad(set_to_none=True)
            net(batch, labels=batch).loss.backward()
            step()
    worst = max((a - b).abs().max().item() for a, b in zip(model.parameters(), reference.parameters()))
    assert worst <= 1e-6, worst
