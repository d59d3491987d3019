"""Synthetic images of four shapes, generated deterministically from a seed (nothing downloaded).

Class 0: horizontal bar, 1: vertical bar, 2: hollow square, 3: cross; each at a random position
and size on a ``image_size`` x ``image_size`` canvas with Gaussian noise.
"""

from __future__ import annotations

import lightning.pytorch as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from .loaders import train_loader, val_loader

NUM_CLASSES = 4


def make_shapes(n: int, size: int, noise: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` images (n, 1, size, size) float32 and labels (n,) int64."""
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    images = torch.zeros(n, 1, size, size)
    lengths = torch.randint(size // 4, size // 2 + 1, (n,), generator=generator)
    rows = torch.randint(0, size, (n, 2), generator=generator)
    for i in range(n):
        c, L_ = int(labels[i]), int(lengths[i])
        r0, c0 = (int(v) % (size - L_ + 1) for v in rows[i])
        img = images[i, 0]
        if c == 0:
            img[r0 + L_ // 2, c0 : c0 + L_] = 1.0
        elif c == 1:
            img[r0 : r0 + L_, c0 + L_ // 2] = 1.0
        elif c == 2:
            img[r0, c0 : c0 + L_] = img[r0 + L_ - 1, c0 : c0 + L_] = 1.0
            img[r0 : r0 + L_, c0] = img[r0 : r0 + L_, c0 + L_ - 1] = 1.0
        else:
            img[r0 + L_ // 2, c0 : c0 + L_] = img[r0 : r0 + L_, c0 + L_ // 2] = 1.0
    images += noise * torch.randn(images.shape, generator=generator)
    return images, labels


class ShapesDataModule(L.LightningDataModule):
    def __init__(
        self,
        num_train: int = 4096,
        num_val: int = 1024,
        image_size: int = 16,
        noise: float = 0.3,
        seed: int = 1234,
        batch_size: int = 64,
        num_workers: int = 0,
    ):
        super().__init__()
        self.num_train, self.num_val, self.image_size = num_train, num_val, image_size
        self.noise, self.seed, self.batch_size, self.num_workers = noise, seed, batch_size, num_workers
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        g = torch.Generator().manual_seed(self.seed)
        x, y = make_shapes(self.num_train + self.num_val, self.image_size, self.noise, g)
        self.train_set = TensorDataset(x[: self.num_train], y[: self.num_train])
        self.val_set = TensorDataset(x[self.num_train :], y[self.num_train :])

    def example_input(self) -> Tensor:
        return torch.zeros(self.batch_size, 1, self.image_size, self.image_size)

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.train_set, self.batch_size, self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return val_loader(self.val_set, self.batch_size, self.num_workers)
