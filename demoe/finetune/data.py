"""A finetuning's data: every rank sees its share of each global batch, in a seeded per-epoch order
that can start part-way through an epoch; crops and flips depend only on (seed, epoch, index). The
validation set and its metrics live on rank 0."""

import itertools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from demoe.data.dataset import PairedImageDataset, SynthesizedPairs
from demoe.data.pairs import Benchmark, resolve
from demoe.finetune.options import RunOptions, TrainError
from demoe.metrics.scorers import MetricSet, Protocol
from demoe.runner.scoring import collate_pairs
from demoe.runtime import Dist
from demoe.vocab import ORACLE


class EpochSampler(torch.utils.data.DistributedSampler):
    """The DistributedSampler's seeded per-epoch order, which can start part-way through an epoch."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start


def holdout(pairs: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, val): a seeded ``fraction`` of ``pairs`` (at least one) held out for validation, whatever
    their order on disk; the rest, in their own order, for training."""
    names = sorted(p.name for p in pairs)
    count = max(1, round(fraction * len(names)))
    held = {names[i] for i in np.random.default_rng(seed).permutation(len(names))[:count]}
    return [p for p in pairs if p.name not in held], [p for p in pairs if p.name in held]


def load_pairs(part: dict, data_root: Path | None, bench_dirs: list[Path]) -> tuple[list, Benchmark]:
    bench = resolve(str(part["bench"]), split=part["split"], data_root=data_root, bench_dirs=bench_dirs)
    if bench.spec.unpaired:
        raise TrainError(
            f"benchmark {part['bench']} has no sharp images: training and validation need pairs "
            "(evaluate it with `demoe-eval run`, which scores it without reference)"
        )
    pairs = list(bench.pairs)[: part["limit"]] if part["limit"] else list(bench.pairs)
    if part["task"]:
        pairs = [replace(p, label=part["task"]) for p in pairs]
    if not pairs:
        raise TrainError(f"benchmark {part['bench']} ({bench.split}) has no image pairs under {bench.root}")
    return pairs, bench


@dataclass
class TrainData:
    pairs: list
    bench: Benchmark
    dataset: torch.utils.data.Dataset
    sampler: EpochSampler
    loader: torch.utils.data.DataLoader
    generator: torch.Generator  # the DataLoader's, part of the training state
    per_rank: int  # samples per rank in a step
    steps_per_epoch: int

    def start_epoch(self, step: int) -> int:
        """Set the order of the epoch that ``step`` falls in, starting at its batch; returns the epoch."""
        epoch, skip = divmod(step, self.steps_per_epoch)
        self.sampler.set_epoch(epoch)
        self.sampler.start = skip * self.per_rank
        self.dataset.set_epoch(epoch)
        return epoch


def train_data(cfg: dict, opts: RunOptions, dist_info: Dist, device: torch.device) -> TrainData:
    part, seed, world = cfg["datasets"]["train"], int(cfg["manual_seed"]), dist_info.world
    batch = int(part["batch_size"])
    if batch % world:
        raise TrainError(f"datasets.train.batch_size {batch} does not split over {world} processes")
    pairs, bench = load_pairs(part, opts.data_root, opts.bench_dirs)
    fraction = cfg["datasets"]["val"]["holdout"]
    if fraction:
        pairs = holdout(pairs, fraction, seed)[0]
    if cfg["train"]["routing"] == ORACLE and any(p.label is None for p in pairs):
        raise TrainError(
            "train.routing oracle needs task labels; set datasets.train.task for an unlabelled benchmark"
        )
    crop, augment = int(part["gt_size"]), bool(part["augment"])
    if part["synthesize"]:
        from demoe.data.aio_synth import (
            train_photos,  # not at the top: it imports scipy, a second of start-up
        )

        dataset = SynthesizedPairs(train_photos(), crop=crop, length=len(pairs), augment=augment, seed=seed)
    else:
        dataset = PairedImageDataset(pairs, crop=crop, augment=augment, seed=seed)
    sampler = EpochSampler(dataset, num_replicas=world, rank=dist_info.rank, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch // world,
        sampler=sampler,
        num_workers=int(part["num_worker"]),
        collate_fn=collate_pairs,
        drop_last=True,
        generator=generator,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = sampler.num_samples // (batch // world)
    if steps_per_epoch == 0:
        raise TrainError(f"datasets.train: {len(pairs)} pairs are fewer than one batch of {batch}")
    return TrainData(pairs, bench, dataset, sampler, loader, generator, batch // world, steps_per_epoch)


@dataclass
class ValData:
    loader: torch.utils.data.DataLoader
    metrics: MetricSet
    bench: Benchmark
    held_out: int | None = None  # pairs held out of the train split (datasets.val.holdout), else None
    is_test_split: bool = False  # validation scores the split `demoe-eval run` reports for the benchmark


def val_data(cfg: dict, opts: RunOptions, device: torch.device) -> ValData | None:
    """The validation set and its metrics (rank 0), None when the options name no validation set.
    ``datasets.val.holdout`` validates on a seeded fraction of the train split that training leaves out."""
    part, fraction = cfg["datasets"]["val"], cfg["datasets"]["val"]["holdout"]
    if fraction:
        train_pairs, bench = load_pairs(cfg["datasets"]["train"], opts.data_root, opts.bench_dirs)
        pairs = holdout(train_pairs, fraction, int(cfg["manual_seed"]))[1]
    elif not part["bench"]:
        return None
    else:
        pairs, bench = load_pairs(part, opts.data_root, opts.bench_dirs)
    loader = torch.utils.data.DataLoader(
        PairedImageDataset(pairs),
        batch_size=int(part["batch_size"]),
        num_workers=int(part["num_worker"]),
        collate_fn=collate_pairs,
        generator=torch.Generator().manual_seed(int(cfg["manual_seed"])),
    )
    protocol = Protocol(
        **{k: v for k, v in bench.spec.protocol.items() if k in ("color", "crop_border", "quantize_8bit")}
    )
    metrics = MetricSet(cfg["val"]["metrics"], device=device, protocol=protocol)
    for name, reason in metrics.unavailable.items():
        print(f"note: validation metric {name} is not computed: {reason}", flush=True)
    # the split a paper would report: one named test, or the test split its manifest names
    manifest_test = bench.spec.source is not None and bench.split == bench.spec.test_split
    on_test = not fraction and (bench.split == "test" or manifest_test)
    val = ValData(loader, metrics, bench, len(pairs) if fraction else None, on_test)
    if val.is_test_split:
        print(
            f"WARNING: validating on {bench.spec.name}'s test split ({bench.split}): checkpoints chosen on it "
            "make its test figures optimistic; validate on a val split (datasets.val.split) or a part of "
            "train (datasets.val.holdout: 0.1)",
            flush=True,
        )
    return val
