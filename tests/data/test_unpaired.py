"""Benchmarks without sharp images: folders of blurred images alone and manifests that say so are found,
checked and read; benchmarks with pairs keep their pairs and fingerprints."""

import hashlib

import numpy as np
import pytest
import yaml
from helpers import write_pairs
from PIL import Image

from demoe.data.dataset import PairedImageDataset
from demoe.data.pairs import check, resolve
from demoe.registry.benchmarks import BenchmarkError


def write_images(folder, count: int, size=(40, 32)) -> list[str]:
    """``count`` real PNG files (random colours, width x height ``size``) in ``folder``; their stems."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / f"cap{i}.png"
        )
    return [f"cap{i}" for i in range(count)]


@pytest.mark.parametrize("layout", ["images", "blur", "subsets"])
def test_a_folder_of_blurred_images_alone_is_an_unpaired_benchmark(tmp_path, layout):
    root = tmp_path / "metalens"
    if layout == "images":
        names = write_images(root, 3)
    elif layout == "blur":
        names = write_images(root / "blur", 3)
    else:
        names = [f"lab/{n}" for n in write_images(root / "lab" / "blur", 2)]
        names += [f"street/{n}" for n in write_images(root / "street" / "meta", 1)]
    bench = resolve(str(root))
    assert bench.spec.unpaired and bench.spec.name == "metalens"
    assert [p.name for p in bench.pairs] == names
    assert all(p.sharp is None and p.blurred.is_file() for p in bench.pairs)
    report = check(bench, read_pixels=True)
    assert report.ok and report.pairs == len(names) and not report.problems


def test_an_empty_folder_is_still_an_error_naming_what_it_lacks(tmp_path):
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    (tmp_path / "empty" / "notes" / "readme.txt").write_text("no images")
    with pytest.raises(BenchmarkError, match="holds none of the folder pairs .* nor any image"):
        resolve(str(tmp_path / "empty"))


def test_a_paired_folder_keeps_its_pairs_and_its_fingerprint(tmp_path):
    write_pairs(tmp_path / "plain", 2, np.random.default_rng(0))
    bench = resolve(str(tmp_path / "plain"))
    assert not bench.spec.unpaired and all(p.sharp is not None for p in bench.pairs)
    digest = hashlib.sha256()
    for pair in bench.pairs:  # the fingerprint's definition, as every result logged so far records it
        blurred = f"blur/{pair.name}.png\t{pair.blurred.stat().st_size}"
        sharp = f"sharp/{pair.name}.png\t{pair.sharp.stat().st_size}"
        digest.update(f"{pair.name}\t{blurred}\t{sharp}\n".encode())
    assert check(bench).fingerprint == digest.hexdigest()[:16]


def manifest(tmp_path, name: str, **keys) -> None:
    (tmp_path / "manifests").mkdir(exist_ok=True)
    data = {"name": name, "root": "Metalens", "splits": {"test": {"pairs": None}}} | keys
    (tmp_path / "manifests" / f"{name}.yaml").write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    "keys",
    [
        {"unpaired": True, "layout": {"blurred": "meta", "subsets": [{"folder": "{split}"}]}},
        {"layout": {"blurred": "meta", "sharp": None, "subsets": [{"folder": "{split}"}]}},
    ],
    ids=["unpaired-key", "sharp-null"],
)
def test_a_manifest_without_sharp_images_is_an_unpaired_benchmark(tmp_path, keys):
    names = write_images(tmp_path / "data" / "Metalens" / "test" / "meta", 2)
    manifest(tmp_path, "Captures", **keys)
    bench = resolve("Captures", data_root=tmp_path / "data", bench_dirs=[tmp_path / "manifests"])
    assert bench.spec.unpaired and [p.name for p in bench.pairs] == names
    assert all(p.sharp is None for p in bench.pairs)


def test_a_manifest_mixing_subsets_with_and_without_sharp_images_is_an_error(tmp_path):
    subsets = [{"name": "a", "folder": "a", "sharp": None}, {"name": "b", "folder": "b"}]
    manifest(tmp_path, "Mixed", layout={"subsets": subsets})
    with pytest.raises(BenchmarkError, match="every subset has sharp images or none"):
        resolve("Mixed", data_root=tmp_path / "data", bench_dirs=[tmp_path / "manifests"])
    manifest(tmp_path, "Mixed", unpaired="yes", layout={"subsets": subsets})
    with pytest.raises(BenchmarkError, match="unpaired must be true"):
        resolve("Mixed", data_root=tmp_path / "data", bench_dirs=[tmp_path / "manifests"])


def test_the_dataset_gives_an_unpaired_image_whole_and_no_sharp_one_and_refuses_training_crops(tmp_path):
    write_images(tmp_path / "caps", 1, size=(40, 24))
    pairs = resolve(str(tmp_path / "caps")).pairs
    blurred, sharp, name, label = PairedImageDataset(pairs)[0]
    assert tuple(blurred.shape) == (3, 24, 40) and sharp is None and name == "cap0" and label == -1
    with pytest.raises(BenchmarkError, match="need sharp images"):
        PairedImageDataset(pairs, crop=16)
