"""Byte-level language modeling on one text file; by default the corpus shipped in the package."""

from __future__ import annotations

import math
from importlib.resources import files
from pathlib import Path

import lightning.pytorch as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .loaders import train_loader, val_loader

#: The Python language reference topics (CPython's pydoc_data), shipped with the package.
DEFAULT_CORPUS = "python_reference.txt"


def read_corpus(path: str | None = None) -> bytes:
    """The bytes of ``path`` (default: the shipped corpus); refuses a missing or non-text file."""
    if path is None:
        return (files("lightning_adam_mini.app") / "data" / DEFAULT_CORPUS).read_bytes()
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"data.path={path!r}: no such file; give a text file or null")
    data = file.read_bytes()
    if not data:
        raise ValueError(f"data.path={path!r} is empty; give a text file")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"data.path={path!r} is not UTF-8 text (byte {err.start}); give a text file"
        ) from None
    return data


class TokenWindows(Dataset):
    """Non-overlapping windows: item i is (tokens[i*T : i*T+T], tokens[i*T+1 : i*T+T+1])."""

    def __init__(self, tokens: Tensor, block_size: int):
        if len(tokens) <= block_size:
            raise ValueError(f"{len(tokens)} tokens can't fill one window of block_size={block_size}")
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.block_size

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        start = i * self.block_size
        chunk = self.tokens[start : start + self.block_size + 1]
        return chunk[:-1], chunk[1:]


class ByteTextDataModule(L.LightningDataModule):
    """Bytes of a UTF-8 file as tokens (vocab 256), split in order into train | val | test.

    The last ``test_fraction`` of the bytes is the test split (default 0: none), the
    ``val_fraction`` before it the validation split. With a test split, choose settings (e.g. the
    lr) on the validation loss and report the test loss, which the choice never saw.
    """

    vocab_size = 256

    def __init__(
        self,
        path: str | None = None,
        block_size: int = 128,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        num_workers: int = 0,
        test_fraction: float = 0.0,
    ):
        super().__init__()
        for name, value in (("block_size", block_size), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"data.{name} must be >= 1, got {value}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        if not 0.0 <= test_fraction < 1.0 - val_fraction:
            raise ValueError(
                f"data.test_fraction must be in [0, 1 - val_fraction) = [0, {1 - val_fraction:g}), "
                f"got {test_fraction}"
            )
        self.path, self.block_size, self.batch_size = path, block_size, batch_size
        self.val_fraction, self.test_fraction, self.num_workers = val_fraction, test_fraction, num_workers
        # Read and checked now, while the config is built, not after the model and Trainer are.
        self.tokens = torch.frombuffer(bytearray(read_corpus(path)), dtype=torch.uint8).long()
        self.n_val = int(len(self.tokens) * val_fraction)
        self.n_test = int(len(self.tokens) * test_fraction)
        held_out = self.n_val + self.n_test
        train_windows = (len(self.tokens) - held_out - 1) // block_size
        too_short = self.n_val <= block_size or (test_fraction > 0 and self.n_test <= block_size)
        if too_short or train_windows < batch_size:
            smallest = min(f for f in (val_fraction, test_fraction) if f > 0)
            train_fraction = 1 - val_fraction - test_fraction
            need = max((block_size + 1) / smallest, (batch_size * block_size + 1) / train_fraction)
            raise ValueError(
                f"data.path={path!r} has {len(self.tokens)} bytes: too few for data.block_size="
                f"{block_size}, data.batch_size={batch_size}, data.val_fraction={val_fraction} and "
                f"data.test_fraction={test_fraction} (one training batch and one window per held-out "
                f"split need about {math.ceil(need)} bytes); give a longer file or smaller sizes"
            )
        self.train_set: TokenWindows | None = None
        self.val_set: TokenWindows | None = None
        self.test_set: TokenWindows | None = None

    @property
    def has_test_split(self) -> bool:
        return self.n_test > 0

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        n_train = len(self.tokens) - self.n_val - self.n_test
        self.train_set = TokenWindows(self.tokens[:n_train], self.block_size)
        self.val_set = TokenWindows(self.tokens[n_train : n_train + self.n_val], self.block_size)
        if self.has_test_split:
            self.test_set = TokenWindows(self.tokens[n_train + self.n_val :], self.block_size)

    def example_input(self) -> Tensor:
        """A batch of ``x`` with the training shape (values irrelevant; used for tracing)."""
        return torch.zeros(self.batch_size, self.block_size, dtype=torch.long)

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.train_set, self.batch_size, self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return val_loader(self.val_set, self.batch_size, self.num_workers)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise ValueError("no test split: set data.test_fraction > 0")
        return val_loader(self.test_set, self.batch_size, self.num_workers)
