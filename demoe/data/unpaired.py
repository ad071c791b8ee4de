"""Benchmarks without sharp images: a metalens user's captures, or any folder of blurred photos.

A folder given as ``--bench`` that holds no pair of folders but blurred images (``blur/`` without
``sharp/``, such a folder per sub-folder, or image files themselves) becomes a benchmark whose subsets
have no ``sharp`` folder; ``demoe.data.pairs`` then finds one image per name, with no partner, and the
evaluation scores them with no-reference metrics only.
"""

import os
from collections.abc import Sequence
from pathlib import Path

from demoe.registry.benchmarks import IMAGE_PATTERNS, BenchmarkError, Subset
from demoe.vocab import TASKS

IMAGE_SUFFIXES = frozenset(pattern.removeprefix("*").lower() for pattern in IMAGE_PATTERNS)


def has_images(folder: Path) -> bool:
    """Whether ``folder`` (or a folder under it) holds an image file that a benchmark would read."""
    for _root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
            return True
    return False


def _label(folder: Path) -> str | None:
    return folder.name if folder.name in TASKS else None


def unpaired_subsets(base: Path, blurred_names: Sequence[str]) -> tuple[Subset, ...]:
    """The subsets of a folder holding blurred images and no sharp ones: one of ``blurred_names``
    (``blur/``, ...), one such folder in each sub-folder (one subset each), or else the image files
    under ``base`` themselves. A folder named after a task labels its images. Empty without images."""
    own = next((n for n in blurred_names if (base / n).is_dir()), None)
    if own is not None:
        others = sorted(
            p.name for p in base.iterdir() if p.is_dir() and p.name != own and not p.name.startswith(".")
        )
        if any(has_images(base / name) for name in others):
            raise BenchmarkError(
                f"--bench {base}: {own}/ has no sharp partner folder of a known name, but {others[0]}/ "
                f"holds images too; rename it (e.g. {own}/ + sharp/), or give the blurred folder alone "
                "to score it without reference"
            )
        return (Subset(blurred=own, sharp=None, label=_label(base)),)
    subsets = tuple(
        Subset(name=sub.name, folder=sub.name, blurred=n, sharp=None, label=_label(sub))
        for sub in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        if (n := next((n for n in blurred_names if (sub / n).is_dir()), None)) is not None
    )
    if subsets:
        return subsets
    return (Subset(blurred="", sharp=None, label=_label(base)),) if has_images(base) else ()
