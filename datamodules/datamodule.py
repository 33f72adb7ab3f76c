"""LightningDataModule over a prepared artifact: pads each batch to its own longest sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from datamodules.artifact import MANIFEST, load_split


class SequenceDataset(Dataset):
    def __init__(self, x: list[np.ndarray], y: np.ndarray):
        self.x = [torch.from_numpy(np.ascontiguousarray(s)) for s in x]
        self.y = torch.from_numpy(np.ascontiguousarray(y))
        self.lengths = torch.tensor([len(s) for s in self.x], dtype=torch.int64)
        self.fixed_length = len(set(self.lengths.tolist())) <= 1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A whole batch, already collated as ``collate`` would (the DataLoader calls this when
        it exists): one index op for lengths and targets, and a plain stack when every sequence
        has the same length, instead of a Python call, a tuple and a length per sample (a third
        of the loop's own cost per step for a small LSTM: benchmarks/step_overhead.py)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        seqs = [self.x[i] for i in indices]
        x = torch.stack(seqs) if self.fixed_length else pad_sequence(seqs, batch_first=True)
        return x, self.lengths[idx], self.y[idx]


def collate(batch):
    """(x padded with zeros to the batch's longest, lengths, y). A batch that
    ``SequenceDataset.__getitems__`` already collated passes through."""
    if isinstance(batch, tuple):
        return batch
    seqs, ys = zip(*batch)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    return pad_sequence(list(seqs), batch_first=True), lengths, torch.stack(ys)


class SequenceDataModule(pl.LightningDataModule):
    """Batches of the train, val and test splits, read from an artifact folder or handed over
    already loaded (``splits``: e.g. from Ray's object store on a cluster)."""

    def __init__(self, artifact_dir: str | Path | None = None, batch_size: int = 32,
                 num_workers: int = 0, seed: int = 0, splits: dict | None = None):
        super().__init__()
        if (artifact_dir is None) == (splits is None):
            raise ValueError("give either artifact_dir or splits")
        self.artifact_dir = Path(artifact_dir) if artifact_dir is not None else None
        self.splits = splits
        self.batch_size = int(batch_size)
        self.num_workers = num_workers
        self.seed = seed
        self.datasets: dict[str, SequenceDataset] = {}

    @override
    def prepare_data(self) -> None:
        # Preparation happens once, upstream (datamodules.catalog.prepare); here we only check.
        if self.artifact_dir is not None and not (self.artifact_dir / MANIFEST).is_file():
            raise FileNotFoundError(f"no prepared artifact at {self.artifact_dir}")

    @override
    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            if split not in self.datasets:
                data = self.splits[split] if self.splits else load_split(self.artifact_dir, split)
                self.datasets[split] = SequenceDataset(data.x, data.y)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          collate_fn=collate, num_workers=self.num_workers, generator=generator)

    @override
    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
