"""The paired dataset on real image files: tensors, labels, EXIF-rotated pairs, training crops and flips."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from demoe.data import aio_synth
from demoe.data.dataset import PairedImageDataset, SynthesizedPairs
from demoe.data.images import ImageReadError
from demoe.data.pairs import Pair
from demoe.registry.benchmarks import BenchmarkError
from demoe.vocab import TASKS


def scene(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path: Path, pixels: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)
    return path


def identical_pair(tmp_path: Path, name: str = "p", label: str | None = None, **size) -> Pair:
    """A pair whose blurred and sharp files hold the same pixels, so any misalignment shows."""
    pixels = scene(**size)
    return Pair(
        name,
        save(tmp_path / "blur" / f"{name}.png", pixels),
        save(tmp_path / "sharp" / f"{name}.png", pixels),
        label,
    )


def test_items_are_chw_float32_tensors_with_name_and_label_index(tmp_path):
    pixels = scene()
    pair = Pair("a", save(tmp_path / "b.png", pixels), save(tmp_path / "s.png", 255 - pixels), "low_light")
    blurred, sharp, name, label = PairedImageDataset([pair])[0]
    assert blurred.shape == sharp.shape == (3, 40, 56) and blurred.dtype == sharp.dtype == torch.float32
    assert float(blurred.min()) >= 0 and float(blurred.max()) <= 1
    torch.testing.assert_close(blurred + sharp, torch.ones_like(blurred))
    torch.testing.assert_close(blurred, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    assert (name, label) == ("a", 4)


def test_unlabelled_pair_has_label_minus_one(tmp_path):
    assert PairedImageDataset([identical_pair(tmp_path)])[0][3] == -1


def test_exif_rotated_jpeg_pair_stays_aligned(tmp_path):
    pixels = np.asarray(Image.fromarray(scene(5, 7)).resize((56, 40), Image.BICUBIC))
    paths = []
    for role in ("blur", "sharp"):
        im = Image.fromarray(pixels)
        exif = im.getexif()
        exif[0x0112] = 6
        paths.append(save(tmp_path / role / "r.jpg", pixels, exif=exif, quality=98))
    blurred, sharp, _, _ = PairedImageDataset([Pair("r", *paths, None)])[0]
    assert blurred.shape == (3, 56, 40)
    torch.testing.assert_close(blurred, sharp)
    upright = torch.from_numpy(np.rot90(pixels, k=-1).copy()).permute(2, 0, 1).float() / 255
    assert float((blurred - upright).abs().mean()) < 0.02


def test_size_mismatch_names_the_file(tmp_path):
    pair = Pair("m", save(tmp_path / "b.png", scene()), save(tmp_path / "s.png", scene(40, 50)), None)
    with pytest.raises(ImageReadError, match="s.png: size mismatch: sharp 50x40, blurred 56x40"):
        PairedImageDataset([pair])[0]


def test_crop_takes_the_same_patch_from_both_and_is_repeatable(tmp_path):
    pair = identical_pair(tmp_path)
    full = PairedImageDataset([pair])[0][0]
    dataset = PairedImageDataset([pair], crop=16, seed=3)
    blurred, sharp, _, _ = dataset[0]
    assert blurred.shape == (3, 16, 16)
    torch.testing.assert_close(blurred, sharp)
    windows = full.unfold(1, 16, 1).unfold(2, 16, 1)
    assert any(torch.equal(windows[:, y, x], blurred) for y in range(25) for x in range(41))
    torch.testing.assert_close(PairedImageDataset([pair], crop=16, seed=3)[0][0], blurred)
    patches = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        patches.add(dataset[0][0].numpy().tobytes())
    assert len(patches) > 1


def test_augment_applies_one_flip_or_rotation_to_both(tmp_path):
    pair = identical_pair(tmp_path, height=24, width=24)
    original = PairedImageDataset([pair])[0][0]
    dihedral = [torch.rot90(original, k, (1, 2)) for k in range(4)]
    dihedral += [torch.flip(t, (2,)) for t in dihedral]
    dataset = PairedImageDataset([pair], augment=True, seed=1)
    seen = set()
    for epoch in range(24):
        dataset.set_epoch(epoch)
        blurred, sharp, _, _ = dataset[0]
        torch.testing.assert_close(blurred, sharp)
        seen.add(next(i for i, t in enumerate(dihedral) if torch.equal(t, blurred)))
    assert len(seen) >= 5


def test_randomness_does_not_depend_on_the_number_of_workers(tmp_path):
    pairs = [identical_pair(tmp_path, f"p{i}") for i in range(4)]
    dataset = PairedImageDataset(pairs, crop=12, augment=True, seed=7)
    dataset.set_epoch(2)
    single = [b for b, *_ in torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=0)]
    parallel = [b for b, *_ in torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)]
    for a, b in zip(single, parallel, strict=True):
        torch.testing.assert_close(a, b)


def test_crop_larger_than_the_image_is_a_clear_error(tmp_path):
    with pytest.raises(BenchmarkError, match="56x40 is smaller than the crop of 64 pixels"):
        PairedImageDataset([identical_pair(tmp_path)], crop=64)[0]


@pytest.fixture(scope="module")
def train_photos() -> dict[str, np.ndarray]:
    return aio_synth.train_photos()


def test_synthesized_pairs_are_fresh_degraded_crops_of_the_train_photos_cycling_over_the_tasks(train_photos):
    dataset = SynthesizedPairs(train_photos, crop=48, length=10, augment=True, seed=3)
    items = [dataset[i] for i in range(10)]
    assert [label for *_, label in items] == list(range(len(TASKS))) * 2
    for blurred, sharp, name, _ in items:
        assert blurred.shape == sharp.shape == (3, 48, 48) and blurred.dtype == torch.float32
        assert 0 <= float(blurred.min()) and float(blurred.max()) <= 1
        assert float((blurred - sharp).abs().mean()) > 0.003, name
        assert name.split("@")[0] in aio_synth.SPLITS["train"]
    again = SynthesizedPairs(train_photos, crop=48, length=10, augment=True, seed=3)
    torch.testing.assert_close(again[4][0], items[4][0], rtol=0, atol=0)
    again.set_epoch(1)
    assert not torch.equal(again[4][1], items[4][1]) and again[4][3] == items[4][3]


def test_synthesized_pairs_refuse_a_crop_larger_than_a_photo(train_photos):
    with pytest.raises(BenchmarkError, match="chelsea.png: smaller than a crop of 280 pixels"):
        SynthesizedPairs(train_photos, crop=280, length=4, augment=False)


def test_task_folders_give_the_published_expert_index_of_their_task(tmp_path):
    from demoe.data.pairs import resolve

    assert TASKS == ("defocus", "global_motion", "local_motion", "synth_global_motion", "low_light")
    for task in reversed(TASKS):  # made in another order than the experts'
        for sub in ("blur", "sharp"):
            save(tmp_path / "bench" / task / sub / "a.png", scene(16, 16))
    pairs = resolve(str(tmp_path / "bench")).pairs
    dataset = PairedImageDataset(pairs)
    labels = {dataset[i][2]: dataset[i][3] for i in range(len(dataset))}
    assert labels == {f"{task}/a": index for index, task in enumerate(TASKS)}
