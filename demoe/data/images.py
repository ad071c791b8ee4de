"""Image decoding for benchmarks: any PNG (8/16-bit), JPEG or TIFF -> HxWx3 float32 RGB in [0, 1].

Pillow reads the header, the EXIF orientation and 8-bit data. It truncates 16-bit colour to 8 bits,
so 16-bit colour PNG/TIFF (DPDD's ground truth, for one) is decoded with OpenCV instead. Both
``image_size`` and ``read_image`` apply the same orientation, so the sizes that ``bench check`` compares
are those of the arrays the model sees.
"""

import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from demoe.errors import DemoeError

EXIF_ORIENTATION = 0x0112
PNG_IEND = b"IEND"
JPEG_EOI = b"\xff\xd9"
TIFF_STRIP_OFFSETS, TIFF_STRIP_BYTES, TIFF_TILE_OFFSETS, TIFF_TILE_BYTES = 273, 279, 324, 325
TIFF_BITS_PER_SAMPLE = 258
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


class ImageReadError(DemoeError):
    """An image file that cannot be decoded; ``path`` and ``reason`` are kept for reports."""

    def __init__(self, path: Path | str, reason: str = ""):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" if reason else str(path))


class ImageWarning(UserWarning):
    pass


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    has_alpha: bool
    mode: str = "RGB"  # Pillow's mode from the header (P, L, I;16, CMYK, ...)
    bits: int = 8  # per sample: 16 where ``read_image`` reads more than 8 bits


def _reason(error: BaseException) -> str:
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if isinstance(error, IsADirectoryError):
        return "is a folder, not an image file"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image file this reader knows (PNG, JPEG, TIFF, BMP, WebP)"
    return str(error) or type(error).__name__


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8) from the header; a PNG's eXIf after the pixel data is not looked for,
    since finding it would decode the image."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a malformed EXIF block must not make the image unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _oriented_size(im: Image.Image, orientation: int) -> tuple[int, int]:
    width, height = im.size
    return (height, width) if orientation >= 5 else (width, height)


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an HxWxC array, as Pillow's ``ImageOps.exif_transpose`` would."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, k=-1)
    if orientation == 7:
        return array[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(array, k=1)
    return array


def _is_deep_colour(im: Image.Image, path: Path) -> bool:
    """A colour image with more than 8 bits per sample, which Pillow would truncate."""
    if im.format == "PNG":
        with open(path, "rb") as f:
            header = f.read(26)
        return len(header) == 26 and header[24] == 16 and header[25] in (2, 4, 6)
    if im.format == "TIFF":
        bits = im.tag_v2.get(TIFF_BITS_PER_SAMPLE, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return max(bits) > 8 and len(bits) > 1
    return False


def _drop_alpha(array: np.ndarray, path: Path) -> np.ndarray:
    warnings.warn(f"{path}: alpha channel dropped, the image is read as RGB", ImageWarning, stacklevel=2)
    return array[..., :-1]


def _scale(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype.kind in "iu":
        return np.clip(array.astype(np.float32) / 65535.0, 0.0, 1.0)
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def _to_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[2] in (2, 4):
        array = _drop_alpha(array, path)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


def _pillow_array(im: Image.Image) -> np.ndarray:
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode in ("La", "PA"):
        im = im.convert("LA")
    elif im.mode == "RGBa":
        im = im.convert("RGBA")
    elif im.mode not in ("L", "LA", "RGB", "RGBA", "F") and not im.mode.startswith("I"):
        im = im.convert("RGB")
    return np.asarray(im)


def _opencv_array(path: Path) -> np.ndarray:
    import cv2

    array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError("OpenCV could not decode this 16-bit image")
    if array.ndim == 3 and array.shape[2] >= 3:
        array = np.concatenate([array[..., 2::-1], array[..., 3:]], axis=2)
    return array


def read_image(path: Path) -> np.ndarray:
    """HxWx3 float32 RGB in [0, 1], EXIF orientation applied; grayscale becomes 3 channels and an alpha
    channel is dropped with an ``ImageWarning``. Raises ``ImageReadError`` naming the file and reason."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            orientation = _orientation(im)
            if _is_deep_colour(im, path):
                array = _opencv_array(path)
            else:
                im.load()
                array = _pillow_array(im)
    except _DECODE_ERRORS as e:
        raise ImageReadError(path, _reason(e)) from None
    return np.ascontiguousarray(_orient(_to_rgb(_scale(array), path), orientation))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header only."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return _oriented_size(im, _orientation(im))
    except _DECODE_ERRORS as e:
        raise ImageReadError(path, _reason(e)) from None


def _data_end_ok(im: Image.Image, path: Path) -> bool:
    """Whether the file still holds its end: PNG's IEND chunk, JPEG's end-of-image marker, every TIFF strip.
    Reads a few hundred bytes, so a truncated download is caught without decoding the pixels."""
    size = path.stat().st_size
    if im.format == "TIFF":
        tags = im.tag_v2
        for offsets_tag, counts_tag in (
            (TIFF_STRIP_OFFSETS, TIFF_STRIP_BYTES),
            (TIFF_TILE_OFFSETS, TIFF_TILE_BYTES),
        ):
            offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
            if offsets is not None and counts is not None:
                offsets = offsets if isinstance(offsets, tuple) else (offsets,)
                counts = counts if isinstance(counts, tuple) else (counts,)
                return max(o + c for o, c in zip(offsets, counts, strict=False)) <= size
        return True
    if im.format not in ("PNG", "JPEG", "MPO"):
        return True
    with open(path, "rb") as f:
        f.seek(max(0, size - 256))
        tail = f.read()
    if im.format == "PNG":
        return PNG_IEND in tail
    return tail.rstrip(b"\x00").endswith(JPEG_EOI)


def probe_image(path: Path) -> ImageInfo:
    """Size (after EXIF orientation), alpha, mode and bit depth from the header, plus a check that the
    file is not cut short."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            width, height = _oriented_size(im, _orientation(im))
            has_alpha = im.mode in _ALPHA_MODES or (im.mode == "P" and "transparency" in im.info)
            complete = _data_end_ok(im, path)
            deep = im.mode.startswith("I") or im.mode == "F" or _is_deep_colour(im, path)
            mode = im.mode
    except _DECODE_ERRORS as e:
        raise ImageReadError(path, _reason(e)) from None
    if not complete:
        raise ImageReadError(path, "truncated: the file ends before its image data does")
    return ImageInfo(width, height, has_alpha, mode, 16 if deep else 8)
