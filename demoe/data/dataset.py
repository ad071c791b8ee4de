"""The paired dataset: a benchmark's pairs -> (blurred, sharp, name, label index) tensors.

For training, ``crop`` takes a random patch at the same place in both images and ``augment`` applies
the same random flip and rotation to both. The randomness depends only on (seed, epoch, index), so a
run is repeatable whatever the number of DataLoader workers; call ``set_epoch`` before each epoch's
iterator is created (with persistent workers the workers would keep the old epoch).

``SynthesizedPairs`` makes its training pairs instead of reading them: fresh crops of aio-synth's train
photos, each degraded anew, so a model meets new content and new kernels in every epoch.
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from demoe.data.images import ImageReadError, read_image
from demoe.data.pairs import Pair
from demoe.registry.benchmarks import BenchmarkError
from demoe.vocab import TASK_INDEX, TASKS


def _augment(rng: np.random.Generator, *images: Tensor) -> list[Tensor]:
    """The same random quarter-turn and horizontal flip of every (C, H, W) image."""
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))
    turned = [torch.rot90(t, turns, dims=(1, 2)) for t in images]
    return [(torch.flip(t, dims=(2,)) if flip else t).contiguous() for t in turned]


def _chw(image: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class PairedImageDataset(torch.utils.data.Dataset):
    def __init__(self, pairs: Sequence[Pair], crop: int | None = None, augment: bool = False, seed: int = 0):
        if crop is not None and crop < 1:
            raise BenchmarkError(f"crop {crop}: the patch size must be a positive number of pixels")
        self.pairs = list(pairs)
        if crop is not None and any(p.sharp is None for p in self.pairs):
            raise BenchmarkError("training crops need sharp images; this benchmark has none (unpaired)")
        self.crop = crop
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor | None, str, int]:
        pair = self.pairs[i]
        label = TASK_INDEX[pair.label] if pair.label is not None else -1
        if pair.sharp is None:  # a benchmark without sharp images: the blurred image alone, whole
            return _chw(read_image(pair.blurred)), None, pair.name, label
        blurred, sharp = read_image(pair.blurred), read_image(pair.sharp)
        if blurred.shape != sharp.shape:
            (bh, bw), (sh, sw) = blurred.shape[:2], sharp.shape[:2]
            raise ImageReadError(pair.sharp, f"size mismatch: sharp {sw}x{sh}, blurred {bw}x{bh}")
        rng = np.random.default_rng((self.seed, self.epoch, i))
        if self.crop is not None:
            blurred, sharp = self._random_crop(pair, blurred, sharp, rng)
        b, s = _chw(blurred), _chw(sharp)
        if self.augment:
            b, s = _augment(rng, b, s)
        return b, s, pair.name, label

    def _random_crop(
        self, pair: Pair, blurred: np.ndarray, sharp: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        height, width = blurred.shape[:2]
        if height < self.crop or width < self.crop:
            raise BenchmarkError(
                f"{pair.blurred}: {width}x{height} is smaller than the crop of {self.crop} pixels; "
                "use a smaller crop or leave this pair out"
            )
        top = int(rng.integers(height - self.crop + 1))
        left = int(rng.integers(width - self.crop + 1))
        window = (slice(top, top + self.crop), slice(left, left + self.crop))
        return blurred[window], sharp[window]


class SynthesizedPairs(torch.utils.data.Dataset):
    """``length`` training pairs per epoch, made as aio-synth makes its own: item ``i`` is a random
    ``crop`` x ``crop`` patch of one of ``photos`` degraded with its margin by task ``i mod 5`` (so each
    batch holds every task about equally), then flipped and turned when ``augment``. Photo, patch,
    kernel and noise depend only on (seed, epoch, index), as ``PairedImageDataset``'s crops do."""

    def __init__(self, photos: dict[str, np.ndarray], crop: int, length: int, augment: bool, seed: int = 0):
        from demoe.data.aio_synth import MARGIN  # not at the top: it imports scipy, a second of start-up

        if crop < 1:
            raise BenchmarkError(f"crop {crop}: the patch size must be a positive number of pixels")
        small = [name for name, image in photos.items() if min(image.shape[:2]) < crop + 2 * MARGIN]
        if small:
            raise BenchmarkError(
                f"{small[0]}: smaller than a crop of {crop} pixels with its {MARGIN} px margin; use a smaller crop"
            )
        self.photos = list(photos.items())
        self.crop, self.length, self.augment, self.seed = crop, length, augment, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, str, int]:
        from demoe.data.aio_synth import degraded_crop  # scipy, as above

        rng = np.random.default_rng((self.seed, self.epoch, i))
        task = TASKS[i % len(TASKS)]
        name, photo = self.photos[int(rng.integers(len(self.photos)))]
        sharp, blurred, _ = degraded_crop(photo, task, self.crop, rng)
        b, s = _chw(blurred), _chw(sharp)
        if self.augment:
            b, s = _augment(rng, b, s)
        return b, s, f"{name}@{self.epoch}.{i}", TASK_INDEX[task]
