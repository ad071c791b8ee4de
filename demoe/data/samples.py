"""Which pairs a run saves as restored samples for the report's image grids: a varied few per blur type."""

from collections.abc import Sequence

import numpy as np
from PIL import Image

from demoe.data.pairs import Pair


def photo_of(name: str) -> str:
    """The photo a pair was cut from, where its name says (aio-synth's ``coffee_003``); else the name."""
    stem, _, index = name.rpartition("_")
    return stem if stem and (index.isdigit() or index == "full") else name


def is_colour(path) -> bool:
    """False for grayscale files and for RGB files whose three channels are equal; unreadable: False."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
                return False
            image.draft("RGB", (image.width // 8 or 1, image.height // 8 or 1))
            pixels = np.asarray(image.convert("RGB").reduce(4), dtype=np.int16)
    except (OSError, ValueError):
        return False
    return bool(np.abs(pixels - pixels[..., :1]).max() > 8)


def varied_pairs(pairs: Sequence[Pair], per_label: int) -> list[Pair]:
    """Up to ``per_label`` pairs of each blur label (of all pairs where there are no labels): each from a
    photo no other chosen pair shows while the benchmark has one, colour photos before grayscale ones,
    otherwise in the benchmark's order."""
    by_label: dict[str | None, list[Pair]] = {}
    for pair in pairs:
        by_label.setdefault(pair.label, []).append(pair)
    colour: dict[str, bool] = {}

    def coloured(pair: Pair) -> bool:
        if pair.name not in colour:
            colour[pair.name] = is_colour(pair.sharp or pair.blurred)  # no sharp image: the blurred one
        return colour[pair.name]

    shown: set[str] = set()
    chosen: list[Pair] = []
    for group in by_label.values():
        picked: list[Pair] = []
        for _ in range(min(per_label, len(group))):
            rest = [p for p in group if p not in picked]
            fresh = [p for p in rest if photo_of(p.name) not in shown]
            pair = next((p for p in fresh if coloured(p)), None) or (fresh or rest)[0]
            picked.append(pair)
            shown.add(photo_of(pair.name))
        chosen += picked
    return chosen
