"""Image formation with a point-spread function, and the pair maker for a user's PSF.

A PSF acts on light, so images are decoded from sRGB to linear light, convolved, given sensor noise
(Poisson shot noise plus Gaussian read noise), and encoded back to sRGB. The convolution is done in
tiles (each output tile from its input tile plus the PSF's reach, i.e. overlap-save), so the FFT's
working memory is bounded by the tile size and a 4000x3000 photo convolves in a few hundred MB.
"""

import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from scipy.signal import fftconvolve

from demoe.data.images import read_image
from demoe.data.pairs import FOLDER_MANIFEST
from demoe.errors import DemoeError
from demoe.fileio import atomic_write_text, sha256_file
from demoe.progress import bar as progress_bar
from demoe.registry.benchmarks import IMAGE_PATTERNS

IMAGE_SUFFIXES = frozenset(p.removeprefix("*") for p in IMAGE_PATTERNS)


class PsfError(DemoeError):
    """A PSF file, input folder or output folder that ``bench make`` cannot use."""


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (IEC 61966-2-1)."""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB-encoded values, clipped to [0, 1]."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)


def write_png(path: Path, image: np.ndarray) -> None:
    """An 8-bit RGB PNG with fixed settings and no metadata, so equal pixels give equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image) if image.dtype != np.uint8 else image, mode="RGB").save(
        path, format="PNG", compress_level=1, optimize=False
    )


def poisson_gaussian_noise(
    linear: np.ndarray, poisson: float, gaussian: float, rng: np.random.Generator
) -> np.ndarray:
    """Sensor noise in linear light: ``poisson * Poisson(x / poisson) + N(0, gaussian**2)``, so the
    variance is ``poisson * x + gaussian**2`` (``poisson`` is the signal of one photo-electron)."""
    x = np.clip(np.asarray(linear, dtype=np.float64), 0.0, None)
    if poisson > 0:
        x = poisson * rng.poisson(x / poisson)
    if gaussian > 0:
        x = x + gaussian * rng.standard_normal(x.shape)
    return x.astype(np.float32)


def load_psf(path: Path) -> np.ndarray:
    """A PSF from a ``.npy`` file: HxW (one PSF for all channels), HxWx3 or 3xHxW (one per channel).
    Returns float64, HxW or HxWx3, each channel normalised to sum 1. A 3x3x3 array is read as HxWx3."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise PsfError(
            f"--psf {path}: expected a NumPy .npy file (written with numpy.save), not {path.suffix or 'no suffix'}"
        )
    if not path.is_file():
        raise PsfError(f"--psf {path}: no such file")
    try:
        psf = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise PsfError(
            f"--psf {path}: not a readable .npy array ({str(e).splitlines()[0]}); write it with numpy.save"
        ) from None
    if not isinstance(psf, np.ndarray) or psf.dtype.kind not in "biuf":
        raise PsfError(
            f"--psf {path}: holds {getattr(psf, 'dtype', type(psf).__name__)} data; a PSF is an array of real numbers"
        )
    if psf.ndim == 3 and psf.shape[2] != 3 and psf.shape[0] == 3:
        psf = np.moveaxis(psf, 0, 2)
    if not (psf.ndim == 2 or (psf.ndim == 3 and psf.shape[2] == 3)) or 0 in psf.shape:
        raise PsfError(f"--psf {path}: shape {psf.shape} is not HxW, HxWx3 or 3xHxW")
    psf = psf.astype(np.float64)
    if not np.isfinite(psf).all():
        raise PsfError(f"--psf {path}: holds NaN or infinite values; a PSF must be finite")
    if psf.min() < 0:
        raise PsfError(
            f"--psf {path}: has negative values (min {psf.min():.3g}); a PSF is a light distribution >= 0, clip it"
        )
    peaks = psf.max(axis=(0, 1))
    if np.any(peaks <= 0):
        raise PsfError(f"--psf {path}: sums to 0 (in at least one channel), so it cannot be normalised")
    sums = psf.sum(axis=(0, 1))
    if not np.isfinite(sums).all():  # huge finite values: scaled to the peak first, the sum then fits
        psf = psf / peaks
        sums = psf.sum(axis=(0, 1))
    return psf / sums


def apply_psf(image: np.ndarray, psf: np.ndarray, tile: int = 1024) -> np.ndarray:
    """Convolve an HxW or HxWxC image with an HxW PSF (every channel) or an HxWxC PSF (per channel).

    The PSF's centre is pixel ``(h // 2, w // 2)`` (where ``fftshift`` puts it), so a centred PSF does not
    shift the image; borders are extended by mirror reflection. Computed in float64 tile by tile
    (``tile`` x ``tile`` outputs); returns float32 of the image's shape.
    """
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    image = np.asarray(image)
    flat = image.ndim == 2
    planes = image[..., None] if flat else image
    psf = np.asarray(psf, dtype=np.float64)
    kernels = psf[..., None] if psf.ndim == 2 else psf
    channels = planes.shape[2]
    if kernels.shape[2] not in (1, channels):
        raise ValueError(f"PSF has {kernels.shape[2]} channels, the image {channels}")
    kh, kw = kernels.shape[:2]
    top, left = (kh - 1) // 2, (kw - 1) // 2
    height, width = planes.shape[:2]
    out = np.empty(planes.shape, dtype=np.float32)
    for c in range(channels):
        kernel = kernels[..., min(c, kernels.shape[2] - 1)]
        padded = np.pad(
            planes[..., c].astype(np.float32), ((top, kh - 1 - top), (left, kw - 1 - left)), mode="reflect"
        )
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                th, tw = min(tile, height - y), min(tile, width - x)
                block = padded[y : y + th + kh - 1, x : x + tw + kw - 1].astype(np.float64)
                out[y : y + th, x : x + tw, c] = fftconvolve(block, kernel, mode="valid")
    return out[..., 0] if flat else out


def _input_images(input_dir: Path) -> list[Path]:
    if not input_dir.is_dir():
        raise PsfError(f"--input {input_dir}: not a folder of sharp images")
    images = sorted(p for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise PsfError(f"--input {input_dir}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    stems: dict[str, Path] = {}
    for path in images:
        if path.stem in stems:
            raise PsfError(
                f"--input {input_dir}: {stems[path.stem].name} and {path.name} would both become {path.stem}.png; rename one"
            )
        stems[path.stem] = path
    return images


def _describe(
    psf_path: Path, psf: np.ndarray, count: int, input_dir: Path, poisson: float, gaussian: float, seed: int
) -> str:
    shape = "x".join(map(str, psf.shape[:2])) + (" per channel" if psf.ndim == 3 else "")
    noise = (
        f"Poisson-Gaussian noise (poisson {poisson:g}, gaussian {gaussian:g}, seed {seed})"
        if poisson > 0 or gaussian > 0
        else "no noise"
    )
    return (
        f"Made by `demoe-eval bench make` from the {count} sharp images of {input_dir.resolve()}: each decoded "
        f"to linear light, convolved with the PSF {psf_path.name} ({shape}, sha256 {sha256_file(psf_path)[:16]}, "
        f"mirrored borders), given {noise}, encoded back to sRGB and saved as 8-bit PNG; sharp/ holds the "
        "inputs as 8-bit PNG."
    )


def _blur_one(
    path: Path, index: int, psf: np.ndarray, out_dir: Path, poisson: float, gaussian: float, seed: int
) -> None:
    sharp = read_image(path)
    blurred = apply_psf(srgb_to_linear(sharp), psf)
    blurred = poisson_gaussian_noise(blurred, poisson, gaussian, np.random.default_rng([seed, index]))
    write_png(out_dir / "sharp" / f"{path.stem}.png", sharp)
    write_png(out_dir / "blur" / f"{path.stem}.png", linear_to_srgb(blurred))


def make_pairs(
    psf_path: Path,
    input_dir: Path,
    out_dir: Path,
    poisson: float = 0.0,
    gaussian: float = 0.0,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Blur every image of ``input_dir`` with the PSF of ``psf_path`` into the benchmark folder ``out_dir``
    (``blur/``, ``sharp/``, ``benchmark.yaml``, written last); returns ``out_dir``."""
    psf_path, input_dir, out_dir = Path(psf_path), Path(input_dir), Path(out_dir)
    if poisson < 0 or gaussian < 0:
        raise PsfError(f"--poisson {poisson:g} / --gaussian {gaussian:g}: noise levels must be >= 0")
    psf = load_psf(psf_path)
    images = _input_images(input_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise PsfError(f"--out {out_dir}: folder is not empty; choose a new folder or empty it")
    # made in a hidden sibling and moved into place when complete: a failure leaves no half benchmark
    partial = out_dir.parent / f".{out_dir.name}.partial"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with progress_bar(len(images), "bench make", "image", enabled=progress) as bar:
            for index, path in enumerate(images):
                _blur_one(path, index, psf, partial, poisson, gaussian, seed)
                bar.update()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    manifest = {
        "name": out_dir.resolve().name,
        "description": _describe(psf_path, psf, len(images), input_dir, poisson, gaussian, seed),
        "task": None,
        "root": str(out_dir.resolve()),
        "layout": {"blurred": "blur", "sharp": "sharp", "files": ["*.png"]},
        "splits": {"test": {"pairs": len(images)}},
        "test_split": "test",
        "protocol": {"color": "rgb", "crop_border": 0, "quantize_8bit": True},
    }
    atomic_write_text(partial / FOLDER_MANIFEST, yaml.safe_dump(manifest, sort_keys=False, width=110))
    if out_dir.exists():
        out_dir.rmdir()  # empty, checked above
    partial.rename(out_dir)
    return out_dir
