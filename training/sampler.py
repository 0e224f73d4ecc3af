"""A resumable, per-rank stream of (clip index, clip seed) pairs.

Each epoch is a seeded permutation of the dataset split across ranks, so ranks see different clips. The clip seed
depends only on (seed, rank, position), so a clip's random start, flip and jitter are the same whatever the number
of DataLoader workers, and a run resumed at position p continues exactly where it stopped.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

SEED_STRIDE = 1_000_003


class ResumableSampler(Sampler):
    """Infinite sampler yielding (index, seed); `start` is the number of samples this rank already consumed."""

    def __init__(self, dataset_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, start: int = 0):
        if dataset_size < 1:
            raise ValueError("empty dataset")
        self.dataset_size, self.rank, self.world_size, self.seed = dataset_size, rank, world_size, seed
        self.per_rank = math.ceil(dataset_size / world_size)
        self.start = start

    def epoch_indices(self, epoch: int) -> list:
        order = torch.randperm(self.dataset_size, generator=torch.Generator().manual_seed(self.seed * SEED_STRIDE + epoch))
        padded = order.repeat(math.ceil(self.per_rank * self.world_size / self.dataset_size))[: self.per_rank * self.world_size]
        return padded[self.rank :: self.world_size].tolist()

    def clip_seed(self, position: int) -> int:
        return ((self.seed * SEED_STRIDE + self.rank) * 2**31 + position) % 2**63

    def __iter__(self) -> Iterator[tuple]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.per_rank)
            indices = self.epoch_indices(epoch)
            for index in indices[offset:]:
                yield index, self.clip_seed(position)
                position += 1


class SeededClips(Dataset):
    """Wraps a VideoDataset: item (index, seed) -> (clip, index), the clip's randomness drawn from that seed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item) -> tuple:
        index, seed = item
        return self.dataset.sample(index, torch.Generator().manual_seed(seed)), index
