"""Training batches: the image cache as a Dataset fetching whole batches, the sampler that
announces each epoch's order (so images still decoding follow it), class weights, and the
bottleneck-feature loader for stage 1 on a frozen backbone."""

from __future__ import annotations

from functools import partial
from itertools import islice

import numpy as np

from medcls.config import TrainConfig
from medcls.core.engine import FrozenFeatures
from medcls.data.prepared import PreparedData


class TrainingImages:
    """Training images as a torch Dataset that fetches whole batches from the image cache in one
    indexing operation (a per-image policy, one without batch(), is applied image by image)."""

    def __init__(self, cache, rows: np.ndarray, labels: np.ndarray, transform) -> None:
        self.cache, self.rows, self.labels = cache, rows, labels
        self.transform = None if is_batched(transform) else transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        images, labels = self.__getitems__([i])
        return images[0], labels[0]

    def __getitems__(self, indices: list[int]):
        """The DataLoader's batched fetch: (images (B, C, H, W), labels (B,)), already collated."""
        import torch

        images = self.cache.batch(self.rows[indices])
        if self.transform is not None:
            images = torch.stack([self.transform(image) for image in images])
        return images, torch.as_tensor(self.labels[indices])

    def prioritise(self, indices) -> None:
        """An epoch's order: images still decoding in the background are decoded in it."""
        self.cache.prioritise(self.rows[np.asarray(indices)])

    @staticmethod
    def collate(batch):
        return batch


class AnnouncedOrder:
    """A sampler that draws its epoch's order up front (the same draws, in the same order, from
    the same generator) and announces it, so that images still decoding follow training's order."""

    def __init__(self, sampler, announce) -> None:
        self.sampler, self.announce = sampler, announce

    def __iter__(self):
        order = list(self.sampler)
        self.announce(order)
        return iter(order)

    def __len__(self) -> int:
        return len(self.sampler)


class FirstDraws:
    """The first `count` indices of a sampler's epoch order: a fresh random share of a shuffled
    set every epoch (`epoch_size`)."""

    def __init__(self, sampler, count: int) -> None:
        self.sampler, self.count = sampler, min(count, len(sampler))

    def __iter__(self):
        return islice(iter(self.sampler), self.count)

    def __len__(self) -> int:
        return self.count

    def set_epoch(self, epoch: int) -> None:
        """A DistributedSampler reshuffles by epoch; the others draw from their generator."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


def is_batched(transform) -> bool:
    return callable(getattr(transform, "batch", None))


def loader_workers(config: TrainConfig, transform) -> int:
    """Batched policies run in the training loop (no workers needed); per-image ones in one
    single-threaded worker, where their small tensor operations are fast."""
    if config.workers >= 0:
        return config.workers
    return 0 if is_batched(transform) else 1


def positive_weights(targets: np.ndarray) -> np.ndarray:
    """Multi-label: each finding's negatives per positive among its known training cases (the
    `pos_weight` of binary cross-entropy), so a rare finding weighs as much as a common one."""
    known = ~np.isnan(targets)
    positives = np.where(known, targets == 1, False).sum(0)
    negatives = np.where(known, targets == 0, False).sum(0)
    return np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights normalised to mean 1 ('balanced' in scikit-learn's sense)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return weights


def seed_worker(worker_id: int, seed: int) -> None:
    """Each loader worker gets its own augmentation stream (a copied transform would repeat)."""
    import torch

    info = torch.utils.data.get_worker_info()
    transform = info.dataset.transform
    if transform is not None and hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=seed + 1000 * (worker_id + 1))


def make_loader(dataset, labels: np.ndarray, config: TrainConfig, n_classes: int, workers: int, generator,
                distributed=None):
    """Training batches: shuffled (or class-balanced by a sampler) from `generator`, so that two
    loaders sharing one generator, one on images and one on features, draw the same batches;
    under DDP each process gets its shard (DistributedSampler, reshuffled every epoch). With
    `epoch_size` smaller than the set, an epoch is the first `epoch_size` draws of that order
    (each process its share)."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler
    from torch.utils.data.distributed import DistributedSampler

    sharded = distributed is not None and distributed.active
    if sharded:
        sampler = DistributedSampler(dataset, num_replicas=distributed.world, rank=distributed.rank, shuffle=True,
                                     seed=config.seed)
    elif config.class_balance == "sampler":
        weights = class_weights(labels, n_classes)[labels]
        sampler = WeightedRandomSampler(torch.as_tensor(weights), len(weights), generator=generator)
    else:
        sampler = RandomSampler(dataset, generator=generator)  # what shuffle=True builds
    if 0 < config.epoch_size < len(dataset):
        sampler = FirstDraws(sampler, -(-config.epoch_size // (distributed.world if sharded else 1)))
    if hasattr(dataset, "prioritise") and not sharded:
        sampler = AnnouncedOrder(sampler, dataset.prioritise)
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                      collate_fn=getattr(dataset, "collate", None),
                      generator=generator, num_workers=workers,
                      drop_last=len(sampler) > config.batch_size,  # per process: a share of the set under DDP
                      worker_init_fn=partial(seed_worker, seed=config.seed) if workers else None,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def can_cache_features(config: TrainConfig, model, transform) -> bool:
    """Stage 1 can train on features computed once when the backbone is frozen (pretrained), no
    augmentation changes its images (the policy is `none`, or `stage1_augment` is off) and the
    backbone has no dropout of its own."""
    return (config.feature_cache and (config.pretrained or bool(config.weights)) and config.epochs > 0
            and (getattr(transform, "identity", False) or not config.stage1_augment)
            and not model.stochastic_backbone() and not model.head_modules())


def frozen_features(model, data: PreparedData, train_rows, val_rows, train_labels, config: TrainConfig,
                    execution, generator, score_val, train_targets=None):
    """The frozen backbone's features of the training and validation images, and a loader over
    them that shares the image loader's generator (same batches, same order)."""
    import torch
    from torch.utils.data import TensorDataset

    @torch.no_grad()
    def features(rows):
        model.set_trainable(0)
        model.train()  # as in stage 1: frozen batch norm in inference mode, nothing stochastic
        with execution.autocast():  # kept in the pass's dtype: the head then sees what a full pass gives it
            return torch.cat([model.features(execution.inputs(batch)) for batch in data.batches(rows)(config.batch_size)])

    train_features, val_features = features(train_rows), features(val_rows)
    dataset = TensorDataset(train_features.cpu(), torch.as_tensor(train_labels if train_targets is None else train_targets))
    loader = make_loader(dataset, train_labels, config, len(data.classes), 0, generator)

    @torch.no_grad()
    def evaluate_val():
        model.eval()
        with execution.autocast():  # as the full model is scored
            logits = model.head(val_features).float()[:, :len(data.classes)]  # the main task's outputs
        probs = logits.sigmoid() if data.multi_label else logits.softmax(1)
        return score_val(probs.cpu().numpy().astype(np.float64))

    return FrozenFeatures(loader, evaluate_val)
