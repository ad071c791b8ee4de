"""The pairs a run saves for the report's image grids: varied photos, colour first, per blur type."""

import numpy as np
from PIL import Image

from demoe.data.pairs import Pair
from demoe.data.samples import photo_of, varied_pairs


def write(path, colour: bool):
    rng = np.random.default_rng(len(str(path)))
    grey = rng.integers(0, 256, (16, 16, 1), dtype=np.uint8)
    pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) if colour else np.repeat(grey, 3, axis=2)
    Image.fromarray(pixels).save(path)
    return path


def test_each_blur_type_shows_a_different_photo_in_colour_before_the_grayscale_one(tmp_path):
    photos = {"camera": False, "coffee": True, "gravel": False, "motorcycle_left": True}
    pairs = []
    for task in ("defocus", "global_motion"):
        for photo, colour in photos.items():
            name = f"{photo}_{len(pairs):03d}"
            path = write(tmp_path / f"{name}.png", colour)
            pairs.append(Pair(name, path, path, task))
    chosen = varied_pairs(sorted(pairs, key=lambda p: p.name), per_label=1)
    assert [p.label for p in chosen] == ["defocus", "global_motion"]
    assert [photo_of(p.name) for p in chosen] == [
        "coffee",
        "motorcycle_left",
    ]  # camera sorts first: grayscale


def test_a_benchmark_of_one_photo_still_gets_its_samples(tmp_path):
    path = write(tmp_path / "a.png", False)
    pairs = [Pair(f"only_{i:03d}", path, path, None) for i in range(3)]
    assert [p.name for p in varied_pairs(pairs, per_label=2)] == ["only_000", "only_001"]
    assert varied_pairs(pairs, per_label=0) == []


def test_the_photo_of_a_pair_is_read_from_aio_synth_names_only():
    assert photo_of("motorcycle_left_007") == "motorcycle_left"
    assert photo_of("coffee_full") == "coffee"
    assert photo_of("IMG_x") == "IMG_x" and photo_of("0001") == "0001"
