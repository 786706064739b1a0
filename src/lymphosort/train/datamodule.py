"""The training data as Lightning sees it: seeded samplers (class-balanced or shuffled, exact on
resume), uint8 batches, and the DataModule over a LymphoMNIST root or given splits."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lymphosort.train.config import TrainConfig

if TYPE_CHECKING:
    from lymphosort.data.lymphomnist import SplitData

log = logging.getLogger(__name__)

#: Files of a run folder written here (besides model.safetensors/model.json).


class _EpochSeeded(Sampler[int]):
    """A sampler whose draw is deterministic per (seed, epoch): Lightning calls `set_epoch`,
    so a resumed run draws the same batches as an uninterrupted one."""

    def __init__(self, seed: int) -> None:
        self.seed, self.epoch = int(seed), 0
        self._auto = 0  # iterations without set_epoch (e.g. inside a wrapper) still vary

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._auto = 0

    def _generator(self) -> torch.Generator:
        """This iteration's generator (the next one without a `set_epoch` in between)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 7_919 + self._auto)
        self._auto += 1
        return g


class ShuffleSampler(_EpochSeeded):
    """A permutation of all indices, deterministic per (seed, epoch) like `BalancedSampler`.

    Replaces `DataLoader(shuffle=True, generator=...)`, whose generator advances from epoch
    to epoch in memory only: a resumed run would replay epoch 1's order.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        super().__init__(seed)
        self.n = int(n)

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self._generator()).tolist())

    def __len__(self) -> int:
        return self.n


class BalancedSampler(_EpochSeeded):
    """Indices drawn with replacement, each class equally likely (weights 1/class count).

    Deterministic per (seed, epoch) (see `_EpochSeeded`). Under DDP Lightning wraps it so
    each rank takes its own share of the same draw.
    """

    def __init__(self, labels: torch.Tensor, num_samples: int | None = None, seed: int = 0) -> None:
        super().__init__(seed)
        labels = torch.as_tensor(labels).long()
        counts = torch.bincount(labels).double()
        weights = torch.where(counts[labels] > 0, 1.0 / counts[labels], torch.zeros_like(counts[labels]))
        self.weights = weights
        self.num_samples = int(num_samples if num_samples is not None else len(labels))

    def __iter__(self) -> Iterator[int]:
        idx = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=self._generator())
        return iter(idx.tolist())

    def __len__(self) -> int:
        return self.num_samples


class TensorBatches(Dataset):
    """uint8 images + labels, fetched a whole batch at a time (`__getitems__`, no per-item
    Python or collation). With `teacher_perm`, also returns images at independently
    shuffled positions for the teacher (the reference recipe's separate teacher loader).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, teacher_perm: torch.Tensor | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise ValueError(f"expected uint8 images [N,H,W], got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels, self.teacher_perm = images, labels.long(), teacher_perm

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return self.__getitems__([i])

    def __getitems__(self, idx: Sequence[int]) -> tuple[torch.Tensor, ...]:
        ix = torch.as_tensor(list(idx), dtype=torch.long)
        out = (self.images[ix], self.labels[ix])
        if self.teacher_perm is not None:
            out = out + (self.images[self.teacher_perm[ix]],)
        return out


def _collate_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    # __getitems__ already returns stacked tensors.
    return batch


def subset_tensors(data: "SplitData", n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = torch.as_tensor(data.images), torch.as_tensor(data.labels).long()
    if n is not None and n < len(labels):
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        images, labels = images[keep], labels[keep]
    return images, labels


class LymphoDataModule(L.LightningDataModule):
    """Train/val loaders over `load_split` tensors (or SplitData given directly, for tests)."""

    def __init__(
        self,
        cfg: TrainConfig,
        train: "SplitData | None" = None,
        val: "SplitData | None" = None,
        independent_teacher: bool = False,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.train_split, self.val_split = train, val
        self.independent_teacher = independent_teacher
        self.train_ds: TensorBatches | None = None
        self.val_ds: TensorBatches | None = None

    def load(self) -> None:
        """Read the splits (idempotent; also called before the Trainer exists)."""
        if self.train_split is None or self.val_split is None:
            from lymphosort.data.lymphomnist import load_split

            cfg = self.cfg
            self.train_split = self.train_split or load_split(cfg.data_root, "train", cfg.task, cfg.split_version)
            self.val_split = self.val_split or load_split(cfg.data_root, "val", cfg.task, cfg.split_version)

    def setup(self, stage: str | None = None) -> None:
        if self.train_ds is not None:
            return
        self.load()
        assert self.train_split is not None and self.val_split is not None
        cfg = self.cfg
        images, labels = subset_tensors(self.train_split, cfg.max_train_samples, cfg.seed)
        perm = None
        if self.independent_teacher:
            perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.seed + 1))
        self.train_ds = TensorBatches(images, labels, perm)
        v_images, v_labels = subset_tensors(self.val_split, cfg.max_val_samples, cfg.seed)
        self.val_ds = TensorBatches(v_images, v_labels)

    def train_dataloader(self) -> DataLoader:
        assert self.train_ds is not None
        cfg = self.cfg
        # Both samplers draw from (seed, epoch) alone, so a resumed epoch sees the same batches.
        sampler: Sampler[int]
        if cfg.balanced:
            sampler = BalancedSampler(self.train_ds.labels, seed=cfg.seed)
        else:
            sampler = ShuffleSampler(len(self.train_ds), seed=cfg.seed)
        return DataLoader(
            self.train_ds,
            batch_size=cfg.batch_size,
            sampler=sampler,
            collate_fn=_collate_batch,
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,
            # Keep the last partial batch unless it would be a single image (BatchNorm).
            drop_last=len(self.train_ds) % cfg.batch_size == 1,
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_ds is not None
        return DataLoader(
            self.val_ds,
            batch_size=max(self.cfg.batch_size, 256),
            shuffle=False,
            collate_fn=_collate_batch,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )
