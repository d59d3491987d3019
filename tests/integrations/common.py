"""What every client test compares against: the same steps with an explicitly bound
``AdamMini(model, example_inputs=...)`` in a plain loop."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from lightning_adam_mini import AdamMini
from lightning_adam_mini.app.models import Llama, LlamaConfig

CFG = LlamaConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=16)
LR, WEIGHT_DECAY, STEPS = 1e-2, 0.1, 3


def tiny_llama() -> Llama:
    torch.manual_seed(0)
    return Llama(CFG)


def batches(
    steps: int = STEPS, batch: int = 4, length: int = 8
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(tokens, next tokens) of a noisy counting pattern, fixed by the seed."""
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        seq = (torch.randint(0, 64, (batch, 1), generator=g) + torch.arange(length + 1)) % 64
        yield seq[:, :-1], seq[:, 1:]


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def explicitly_bound_run(steps: int = STEPS) -> tuple[nn.Module, AdamMini]:
    """The reference: ``AdamMini(model, example_inputs=...)``, forward, backward, step."""
    model = tiny_llama()
    opt = AdamMini(
        model, lr=LR, weight_decay=WEIGHT_DECAY, example_inputs=(torch.zeros(2, 8, dtype=torch.long),)
    )
    for x, y in batches(steps):
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
    return model, opt


def assert_same_params(got: nn.Module, want: nn.Module, atol: float = 1e-6) -> None:
    init = tiny_llama()
    for (name, p), q, p0 in zip(got.named_parameters(), want.parameters(), init.parameters()):
        assert not torch.equal(q, p0), f"{name} did not train"
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=atol, msg=name)
