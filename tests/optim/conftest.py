import copy

import pytest
import torch

from lightning_adam_mini.app.models import Llama, LlamaConfig
from partitioners import name_partition

TINY = LlamaConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, n_kv_heads=2, hidden_dim=48, max_seq_len=16)


def tiny_llama(seed: int = 0, cfg: LlamaConfig = TINY) -> Llama:
    torch.manual_seed(seed)
    return Llama(cfg)


def tiny_plan(model: Llama):
    cfg = model.cfg
    return name_partition(model, dim=cfg.dim, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads)


def batch(seed: int, cfg: LlamaConfig = TINY, size: int = 4, length: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (size, length), generator=g)


def lm_loss(model, x: torch.Tensor) -> torch.Tensor:
    logits = model(x[:, :-1])
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())


def train(model, opt, steps: int, start: int = 0, scheduler=None, step_fn=None):
    for i in range(start, start + steps):
        opt.zero_grad(set_to_none=True)
        lm_loss(model, batch(i, model.cfg)).backward()
        (step_fn or opt.step)()
        if scheduler is not None:
            scheduler.step()


def max_abs_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a.parameters(), b.parameters()))


@pytest.fixture
def twin_models():
    m = tiny_llama()
    return m, copy.deepcopy(m)
