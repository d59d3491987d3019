"""A tiny GPT-style LightningModule and a deterministic token dataset for the Lightning tests."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lightning_adam_mini import adam_mini_optimizers
from lightning_adam_mini.models import Llama, LlamaConfig

CFG = LlamaConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=16)
T = 8  # tokens per sequence


class Tokens(Dataset):
    """``n`` sequences of a noisy counting pattern (learnable), fixed by ``seed``."""

    def __init__(self, n: int = 64, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, CFG.vocab_size, (n, 1), generator=g)
        step = torch.randint(1, 4, (n, 1), generator=g)
        seq = (start + step * torch.arange(T + 1)) % CFG.vocab_size
        noise = torch.rand(n, T + 1, generator=g) < 0.1
        self.seq = torch.where(noise, torch.randint(0, CFG.vocab_size, (n, T + 1), generator=g), seq)

    def __len__(self) -> int:
        return len(self.seq)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.seq[i, :-1], self.seq[i, 1:]


def example_tokens(batch: int = 2) -> torch.Tensor:
    return torch.zeros(batch, T, dtype=torch.long)


class LitGPT(pl.LightningModule):
    """Next-token prediction with ``Llama(CFG)``; ``configure_optimizers`` is the one-liner."""

    def __init__(
        self,
        lr: float = 3e-3,
        weight_decay: float = 0.1,
        example: bool = True,
        batch_size: int = 8,
        n: int = 64,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        torch.manual_seed(0)
        self.model = Llama(CFG)
        self.lr, self.weight_decay, self.batch_size, self.n = lr, weight_decay, batch_size, n
        self.optimizer_kwargs = optimizer_kwargs or {}
        if example:
            self.example_input_array = example_tokens()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train_loss", loss, prog_bar=False)
        return loss

    def configure_optimizers(self):
        return adam_mini_optimizers(self, lr=self.lr, weight_decay=self.weight_decay, **self.optimizer_kwargs)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Tokens(self.n), batch_size=self.batch_size, shuffle=False)


def trainer(**kwargs: Any) -> pl.Trainer:
    """A quiet CPU Trainer for tests."""
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)
