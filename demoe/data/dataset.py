"""The paired dataset: a benchmark's pairs -> (blurred, sharp, name, label index) tensors.

For training, ``crop`` takes a random patch at the same place in both images and ``augment`` applies
the same random flip and rotation to both. The randomness depends only on (seed, epoch, index), so a
run is repeatable whatever the number of DataLoader workers; call ``set_epoch`` before each epoch's
iterator is created (with persistent workers the workers would keep the old epoch).
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from demoe.data.images import ImageReadError, read_image
from demoe.data.registry import BenchmarkError, Pair
from demoe.tasks import TASK_INDEX


class PairedImageDataset(torch.utils.data.Dataset):
    def __init__(self, pairs: Sequence[Pair], crop: int | None = None, augment: bool = False, seed: int = 0):
        if crop is not None and crop < 1:
            raise BenchmarkError(f"crop {crop}: the patch size must be a positive number of pixels")
        self.pairs = list(pairs)
        self.crop = crop
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, str, int]:
        pair = self.pairs[i]
        blurred, sharp = read_image(pair.blurred), read_image(pair.sharp)
        if blurred.shape != sharp.shape:
            (bh, bw), (sh, sw) = blurred.shape[:2], sharp.shape[:2]
            raise ImageReadError(pair.sharp, f"size mismatch: sharp {sw}x{sh}, blurred {bw}x{bh}")
        rng = np.random.default_rng((self.seed, self.epoch, i))
        if self.crop is not None:
            blurred, sharp = self._random_crop(pair, blurred, sharp, rng)
        b = torch.from_numpy(np.ascontiguousarray(blurred.transpose(2, 0, 1)))
        s = torch.from_numpy(np.ascontiguousarray(sharp.transpose(2, 0, 1)))
        if self.augment:
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            b, s = (torch.rot90(t, turns, dims=(1, 2)) for t in (b, s))
            if flip:
                b, s = (torch.flip(t, dims=(2,)) for t in (b, s))
            b, s = b.contiguous(), s.contiguous()
        label = TASK_INDEX[pair.label] if pair.label is not None else -1
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
