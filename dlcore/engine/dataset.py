"""The in-memory dataset every part of the engine shares, and the one training split they all use."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class DatasetError(Exception):
    """A dataset that cannot be had or read; the message says which file or what to do."""


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 (N, C, H, W), labels as int64 (N,), and what they mean.

    `mean` and `std` are per channel on the 0..1 scale, computed over the training images.
    `source` says in words where the data came from (a folder, the cache, a download, the sample).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_features(self) -> int:
        c, h, w = self.shape
        return c * h * w


@dataclass(frozen=True)
class Split:
    """Indices into `Dataset.train_x`: what the model trains on, and what early stopping watches."""

    train: torch.Tensor
    val: torch.Tensor


def split_train(num_train: int, subset: int = 0, val_fraction: float = 0.0, seed: int = 42) -> Split:
    """The training split, a pure function of its arguments so a forest and a network see the same.

    `subset` > 0 keeps that many training images (drawn with the seed); `val_fraction` > 0 carves a
    validation part out of what is kept. The test set is never touched.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_train, generator=generator)
    if 0 < subset < num_train:
        order = order[:subset]
    _, num_val = split_sizes(num_train, subset, val_fraction)
    return Split(train=order[num_val:].sort().values, val=order[:num_val].sort().values)


def split_sizes(num_train: int, subset: int = 0, val_fraction: float = 0.0) -> tuple[int, int]:
    """How many images `split_train` puts in (training, validation), without drawing them: the
    estimates before a run count the same images the run will use."""
    kept = subset if 0 < subset < num_train else num_train
    # At least one image when asked for, so early stopping never silently has nothing to watch.
    num_val = max(1, int(round(kept * val_fraction))) if val_fraction > 0 else 0
    num_val = max(0, min(num_val, kept - 1))
    return kept - num_val, num_val
