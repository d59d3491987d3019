"""The app's data loaders, shared by its data modules."""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader


def train_loader(dataset: Dataset | None, batch_size: int, num_workers: int) -> DataLoader:
    """Shuffled full batches from a loader whose position Lightning saves in checkpoints, so a
    resumed run sees exactly the batches the uninterrupted run would have seen."""
    assert dataset is not None, "Lightning calls setup() before asking for data"
    # Keywords only: under DDP Lightning re-creates it from the saved arguments with a sampler.
    return StatefulDataLoader(
        dataset=dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers
    )


def val_loader(dataset: Dataset | None, batch_size: int, num_workers: int) -> DataLoader:
    """Validation batches in order."""
    assert dataset is not None, "Lightning calls setup() before asking for data"
    return DataLoader(dataset, batch_size, shuffle=False, num_workers=num_workers)
