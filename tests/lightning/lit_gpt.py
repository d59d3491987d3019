"""A tiny GPT-style LightningModule and a deterministic token dataset for the Lightning tests."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_adam_mini import adam_mini_optimizers
from lightning_adam_mini.app.models import GPT, GPTConfig, Llama, LlamaConfig
from lightning_adam_mini.lightning.conventions import trainer_of

CFG = LlamaConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=16)
# Sizes that shard unevenly over 2 ranks along dim 0: 63-token tables (32 | 31 rows), a query head
# (rows 8..15 of 24) and the only key head (rows 0..7 of 8) cut by the shard boundary, norms
# (one block each) split in two.
ODD_LLAMA = LlamaConfig(
    vocab_size=63, dim=24, n_layers=1, n_heads=3, n_kv_heads=1, hidden_dim=40, max_seq_len=16
)
# GPT-2 layout: Conv1D weights (output neurons are dim-1 columns of a Shard(0) tensor), fused
# q|k|v segments, biases (element-wise), tied head.
ODD_GPT = GPTConfig(vocab_size=63, block_size=16, n_layer=1, n_head=3, n_embd=24)
T = 8  # tokens per sequence


def build_model(arch: str) -> torch.nn.Module:
    return {
        "llama": lambda: Llama(CFG),
        "odd_llama": lambda: Llama(ODD_LLAMA),
        "odd_gpt": lambda: GPT(ODD_GPT),
    }[arch]()


class Tokens(Dataset):
    """``n`` sequences of a noisy counting pattern (learnable), fixed by ``seed``."""

    def __init__(self, n: int = 64, seed: int = 0, vocab: int = 63):
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, vocab, (n, 1), generator=g)
        step = torch.randint(1, 4, (n, 1), generator=g)
        seq = (start + step * torch.arange(T + 1)) % vocab
        noise = torch.rand(n, T + 1, generator=g) < 0.1
        self.seq = torch.where(noise, torch.randint(0, vocab, (n, T + 1), generator=g), seq)

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
        arch: str = "llama",
        fsdp: bool = False,
    ):
        super().__init__()
        torch.manual_seed(0)
        self.model = build_model(arch)
        self.fsdp = fsdp
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

    def configure_model(self) -> None:
        """FSDP2 under ModelParallelStrategy: each block, then the root, sharded on dim 0."""
        if not self.fsdp:
            return
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        blocks = self.model.layers if hasattr(self.model, "layers") else self.model.transformer.h
        for block in blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(self.model, mesh=mesh)

    def train_dataloader(self) -> DataLoader:
        """In order; with several ranks, rank r takes samples r, r + world, ... (so that one
        process with batch ``world * batch_size`` sees the same global batches)."""
        data = Tokens(self.n)
        trainer = trainer_of(self)
        world = trainer.world_size if trainer is not None else 1
        if world == 1:
            return DataLoader(data, batch_size=self.batch_size, shuffle=False)
        sampler = DistributedSampler(data, num_replicas=world, rank=self.trainer.global_rank, shuffle=False)
        return DataLoader(data, batch_size=self.batch_size, sampler=sampler)


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
