"""A user's own captures (no sharp reference): the image files named as files, folders or glob patterns,
read at full resolution, and restored images written back as PNG of the input's bit depth.

Decoding is ``images.read_image``'s (EXIF orientation, 16-bit colour through OpenCV). On top of it this
module says where each file's output goes (its path relative to the folder or pattern it was found
under), what reading it as RGB changed (one line: grayscale, palette, CMYK, an alpha channel), and
writes 8- and 16-bit RGB PNG atomically, plus labelled side-by-side strips.
"""

import glob
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demoe.data.images import ImageInfo, ImageWarning, read_image
from demoe.errors import DemoeError
from demoe.fileio import atomic_write_bytes

GLOB_CHARS = "*?["


class CaptureError(DemoeError):
    pass


@dataclass(frozen=True)
class Capture:
    path: Path  # as found (relative to the working folder when the input was)
    relative: Path  # relative to the folder or pattern it was found under; a file given alone: its name


def image_suffixes() -> frozenset[str]:
    """The file name endings Pillow opens (``.png``, ``.jpg``, ``.tif``, ``.webp``, ...), lower case."""
    from PIL import Image

    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder)


def _skip_within(folder: Path, skip: Path | None) -> Path | None:
    """``skip`` where it lies inside ``folder`` (the output folder within the captures' folder), else
    None: an output folder around the captures (``--out .``) hides nothing."""
    root = folder.resolve()
    return skip if skip is not None and skip != root and skip.is_relative_to(root) else None


def _walk(folder: Path, skip: Path | None, suffixes: frozenset[str]) -> list[Path]:
    """Image files under ``folder``, recursively, in sorted order; hidden files and folders (``.DS_Store``,
    macOS's ``._x.jpg``) and anything under ``skip`` are left out."""
    skip, found = _skip_within(folder, skip), []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _inside(Path(root) / d, skip))
        found += [
            Path(root) / f
            for f in files
            if not f.startswith(".")
            and Path(f).suffix.lower() in suffixes
            and not _inside(Path(root) / f, skip)
        ]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _glob_base(pattern: str) -> Path:
    """The folder a pattern's matches are relative to: its leading parts without wildcards."""
    base = []
    for part in Path(pattern).parts:
        if any(c in part for c in GLOB_CHARS):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def _matches(pattern: str, skip: Path | None, suffixes: frozenset[str]) -> list[tuple[Path, Path]]:
    base, found = _glob_base(pattern), []
    skip = _skip_within(base, skip)
    for match in map(Path, sorted(glob.glob(pattern, recursive=True))):
        if match.is_dir():
            found += [(p, p.relative_to(base)) for p in _walk(match, skip, suffixes)]
        elif match.suffix.lower() in suffixes and not match.name.startswith(".") and not _inside(match, skip):
            found.append((match, match.relative_to(base)))
    return found


def find_captures(inputs: Sequence[str], skip: Path | None = None) -> list[Capture]:
    """The image files ``inputs`` name, in the order given: a file as is, a folder's image files
    (recursively, sorted), a glob pattern's matches (``**`` recurses). A file found twice counts once.
    Files under ``skip`` (the output folder) inside a folder or pattern are not looked at."""
    if not inputs:
        raise CaptureError("INPUTS: give at least one image file, folder or glob pattern")
    skip = Path(skip).resolve() if skip is not None else None
    suffixes = image_suffixes()
    captures, seen = [], set()
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = [(p, p.relative_to(path)) for p in _walk(path, skip, suffixes)]
            if not found:
                raise CaptureError(f"{text}: no image files in this folder (.png, .jpg, .tif, .webp, ...)")
        elif path.is_file():
            found = [(path, Path(path.name))]
        elif any(c in text for c in GLOB_CHARS):
            found = _matches(text, skip, suffixes)
            if not found:
                raise CaptureError(f"{text}: no image file matches this pattern")
        else:
            raise CaptureError(f"{text}: no such file or folder")
        for file, relative in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                captures.append(Capture(file, relative))
    return captures


def conversion_note(info: ImageInfo) -> str | None:
    """What reading an image as RGB changes, in a few words (None for plain RGB)."""
    mode = info.mode
    if mode == "RGB" and not info.has_alpha:
        return None
    kinds = {"P": "palette image", "1": "black-and-white image"}
    grey = mode.startswith(("L", "I", "F"))
    kind = f"{info.bits}-bit grayscale" if grey else kinds.get(mode, "")
    dropped = ", alpha channel dropped" if info.has_alpha else ""
    return f"{f'{kind} ({mode})' if kind else mode} read as RGB{dropped}"


def read_capture(path: Path) -> np.ndarray:
    """HxWx3 float32 RGB in [0, 1] at full resolution, EXIF orientation applied (``read_image``, whose
    alpha warning ``conversion_note`` replaces)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageWarning)
        return read_image(path)


def write_png(path: Path, image: np.ndarray, bits: int = 8) -> Path:
    """Write an RGB image atomically as PNG: a float HxWx3 array in [0, 1] at ``bits`` (8 or 16) per
    sample, or a uint8/uint16 array as it is."""
    import cv2

    if image.dtype.kind == "f":
        peak, dtype = (65535, np.uint16) if bits > 8 else (255, np.uint8)
        image = (np.clip(image, 0.0, 1.0) * peak + 0.5).astype(dtype)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise CaptureError(f"{path}: could not encode the image as PNG")
    return atomic_write_bytes(path, data.tobytes())


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def compare_strip(panels: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """Images of one size (HxWx3 floats in [0, 1]) side by side, each under its label: HxWx3 uint8."""
    from PIL import Image, ImageDraw

    height, width = panels[0][1].shape[:2]
    band, gap = max(14, min(48, height // 16)), max(2, width // 200)
    canvas = Image.new("RGB", (len(panels) * (width + gap) - gap, height + band), "white")
    draw, font = ImageDraw.Draw(canvas), _font(max(10, band * 7 // 10))
    for i, (label, image) in enumerate(panels):
        left = i * (width + gap)
        canvas.paste(Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)), (left, band))
        draw.text((left + 4, band // 2), label, fill="black", font=font, anchor="lm")
    return np.asarray(canvas)
