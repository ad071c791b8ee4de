"""The PSF pair maker: loading user PSFs, tiled convolution, noise, and `bench make` end to end."""

import hashlib
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve

from demoe.data.aio_synth import skimage_data_dir
from demoe.data.pairs import check, resolve
from demoe.data.psf import (
    PsfError,
    apply_psf,
    linear_to_srgb,
    load_psf,
    make_pairs,
    poisson_gaussian_noise,
    srgb_to_linear,
)
from demoe.registry.benchmarks import load_registry

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def reference(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """The whole image at once: mirror the borders by the PSF's reach, then one full-size FFT convolution."""
    kh, kw = psf.shape[:2]
    pad = ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)
    if image.ndim == 2:
        return fftconvolve(np.pad(image, pad, mode="reflect"), psf, mode="valid")
    planes = []
    for c in range(image.shape[2]):
        kernel = psf if psf.ndim == 2 else psf[..., c]
        planes.append(fftconvolve(np.pad(image[..., c], pad, mode="reflect"), kernel, mode="valid"))
    return np.stack(planes, axis=2)


@pytest.mark.parametrize(
    "image_shape, psf_shape",
    [((150, 170, 3), (15, 11, 3)), ((150, 170, 3), (9, 9)), ((97, 131), (8, 6)), ((40, 50, 3), (61, 61))],
)
def test_tiled_convolution_equals_one_full_image_fft(image_shape, psf_shape):
    rng = np.random.default_rng(0)
    image = rng.random(image_shape)
    psf = rng.random(psf_shape)
    psf /= psf.sum(axis=(0, 1))
    tiled = apply_psf(image, psf, tile=32)
    assert tiled.shape == image.shape
    assert np.abs(tiled - reference(image, psf)).max() < 1e-5


def test_centred_psf_does_not_shift_the_image():
    image = np.random.default_rng(1).random((40, 40))
    for size in (5, 6):
        delta = np.zeros((size, size))
        delta[size // 2, size // 2] = 1.0
        np.testing.assert_allclose(apply_psf(image, delta, tile=16), image, atol=1e-6)


@pytest.mark.slow
def test_a_4000x3000_photo_convolves_in_bounded_memory():
    image = np.random.default_rng(0).random((3000, 4000, 3), dtype=np.float32)
    psf = np.ones((31, 31)) / 31**2
    tracemalloc.start()
    out = apply_psf(image, psf)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out.shape == image.shape and out.dtype == np.float32
    assert peak < 2.5 * image.nbytes
    window = image[1000:1031, 2000:2031].mean(axis=(0, 1))
    np.testing.assert_allclose(out[1015, 2015], window, atol=1e-5)


def test_srgb_round_trip_and_reference_values():
    x = np.linspace(0, 1, 256, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-6)
    assert srgb_to_linear(np.float32(0.5)) == pytest.approx(0.2140, abs=1e-4)


def test_poisson_gaussian_noise_has_the_model_variance():
    rng = np.random.default_rng(0)
    x = np.full(200_000, 0.2)
    noisy = poisson_gaussian_noise(x, 0.001, 0.01, rng)
    assert noisy.mean() == pytest.approx(0.2, abs=1e-3)
    assert noisy.var() == pytest.approx(0.001 * 0.2 + 0.01**2, rel=0.03)


def test_load_psf_accepts_every_layout_and_normalises(tmp_path):
    rng = np.random.default_rng(0)
    hwc = rng.random((7, 5, 3))
    np.save(tmp_path / "hw.npy", hwc[..., 0] * 10)
    np.save(tmp_path / "hwc.npy", hwc)
    np.save(tmp_path / "chw.npy", np.moveaxis(hwc, 2, 0))
    flat = load_psf(tmp_path / "hw.npy")
    assert flat.shape == (7, 5) and flat.sum() == pytest.approx(1.0)
    per_channel = load_psf(tmp_path / "hwc.npy")
    assert per_channel.shape == (7, 5, 3)
    np.testing.assert_allclose(per_channel.sum(axis=(0, 1)), 1.0)
    np.testing.assert_array_equal(load_psf(tmp_path / "chw.npy"), per_channel)


def sharp_folder(folder: Path) -> Path:
    """Two real photo crops (one grayscale) as the sharp inputs."""
    folder.mkdir(parents=True)
    coffee = np.asarray(Image.open(skimage_data_dir() / "coffee.png"))[100:196, 200:328]
    camera = np.asarray(Image.open(skimage_data_dir() / "camera.png"))[50:130, 100:200]
    Image.fromarray(coffee).save(folder / "coffee.png")
    Image.fromarray(camera).save(folder / "camera.png")
    return folder


def make_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "demoe.cli", "bench", "make", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.png"))
    }


def test_bench_make_end_to_end(tmp_path):
    inputs = sharp_folder(tmp_path / "sharp_in")
    psf = np.zeros((9, 9, 3))
    psf[4, :, 0] = 1.0
    psf[:, 4, 1] = 1.0
    psf[2:7, 2:7, 2] = 1.0
    np.save(tmp_path / "psf.npy", np.moveaxis(psf, 2, 0))
    args = ["--psf", tmp_path / "psf.npy", "--input", inputs, "--poisson", "0.0005", "--gaussian", "0.002"]
    result = make_cli(*args, "--seed", "3", "--out", tmp_path / "mylens", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "mylens"
    assert "2 pairs" in result.stdout and str(out) in result.stdout
    assert sorted(p.name for p in (out / "blur").iterdir()) == ["camera.png", "coffee.png"]
    assert sorted(p.name for p in (out / "sharp").iterdir()) == ["camera.png", "coffee.png"]

    sharp = np.asarray(Image.open(out / "sharp" / "coffee.png"), dtype=np.float64)
    blurred = np.asarray(Image.open(out / "blur" / "coffee.png"), dtype=np.float64)
    assert sharp.shape == blurred.shape == (96, 128, 3)
    np.testing.assert_array_equal(sharp, np.asarray(Image.open(inputs / "coffee.png")))
    assert 18 < 10 * np.log10(255**2 / np.mean((blurred - sharp) ** 2)) < 35
    assert np.asarray(Image.open(out / "sharp" / "camera.png")).shape == (80, 100, 3)

    manifest = yaml.safe_load((out / "benchmark.yaml").read_text())
    assert manifest["task"] is None and manifest["splits"]["test"]["pairs"] == 2
    assert manifest["protocol"] == {"color": "rgb", "crop_border": 0, "quantize_8bit": True}
    assert "psf.npy" in manifest["description"] and "seed 3" in manifest["description"]
    spec = load_registry([out])["mylens"]
    report = check(resolve("mylens", bench_dirs=[out]))
    assert spec.task is None and report.ok and report.pairs == 2

    make_pairs(tmp_path / "psf.npy", inputs, tmp_path / "again", poisson=0.0005, gaussian=0.002, seed=3)
    make_pairs(tmp_path / "psf.npy", inputs, tmp_path / "other", poisson=0.0005, gaussian=0.002, seed=4)
    assert digests(tmp_path / "again") == digests(out)
    assert digests(tmp_path / "other")["blur/coffee.png"] != digests(out)["blur/coffee.png"]


def sharpness(image: np.ndarray, axis: int) -> np.ndarray:
    """Mean absolute difference between neighbours along ``axis`` (0: y, 1: x), per channel."""
    return np.abs(np.diff(image.astype(np.float64), axis=axis)).mean(axis=(0, 1))


def test_per_channel_psf_blurs_each_channel_its_own_way(tmp_path):
    rng = np.random.default_rng(0)
    texture = gaussian_filter(rng.random((128, 128, 3)), sigma=(1, 1, 0))
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    (tmp_path / "in").mkdir()
    Image.fromarray(np.rint(texture * 255).astype(np.uint8)).save(tmp_path / "in" / "texture.png")
    psf = np.zeros((9, 9, 3))
    psf[4, :, 0] = 1.0
    psf[:, 4, 1] = 1.0
    psf[2:7, 2:7, 2] = 1.0
    np.save(tmp_path / "psf.npy", psf)
    out = make_pairs(tmp_path / "psf.npy", tmp_path / "in", tmp_path / "out")
    sharp = np.asarray(Image.open(out / "sharp" / "texture.png"))
    blurred = np.asarray(Image.open(out / "blur" / "texture.png"))
    kept_x = sharpness(blurred, 1) / sharpness(sharp, 1)
    kept_y = sharpness(blurred, 0) / sharpness(sharp, 0)
    assert kept_x[0] < 0.5 * kept_y[0], "red: a horizontal line PSF blurs along x"
    assert kept_y[1] < 0.5 * kept_x[1], "green: a vertical line PSF blurs along y"
    assert 0.8 < kept_x[2] / kept_y[2] < 1.25 and kept_x[2] < 0.6, "blue: a square PSF blurs both ways"


def test_delta_psf_without_noise_reproduces_the_input(tmp_path):
    inputs = sharp_folder(tmp_path / "in")
    np.save(tmp_path / "delta.npy", np.ones((1, 1)))
    out = make_pairs(tmp_path / "delta.npy", inputs, tmp_path / "out")
    assert digests(out / "blur") == digests(out / "sharp")


def bad_psf(tmp_path: Path, kind: str) -> Path:
    if kind == "not_npy":
        path = tmp_path / "psf.png"
        Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(path)
        return path
    if kind == "garbage_npy":
        path = tmp_path / "psf.npy"
        path.write_text("not an array")
        return path
    arrays = {
        "four_dims": np.ones((3, 3, 3, 3)),
        "two_channels": np.ones((5, 5, 2)),
        "negative": np.array([[0.0, 1.0], [-0.5, 1.0]]),
        "nan": np.array([[0.0, np.nan], [1.0, 1.0]]),
        "zeros": np.zeros((5, 5)),
        "empty": np.zeros((0, 5)),
        "object": np.array([[1, "a"]], dtype=object),
    }
    path = tmp_path / "psf.npy"
    np.save(path, arrays[kind], allow_pickle=True)
    return path


BAD_KINDS = [
    "not_npy",
    "garbage_npy",
    "four_dims",
    "two_channels",
    "negative",
    "nan",
    "zeros",
    "empty",
    "object",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_psf_files_raise_psf_error(tmp_path, kind):
    with pytest.raises(PsfError, match=r"--psf .*psf\.(npy|png): "):
        load_psf(bad_psf(tmp_path, kind))


@pytest.mark.parametrize("kind", ["not_npy", "garbage_npy", "two_channels", "negative", "nan", "zeros"])
def test_bad_psf_files_give_one_line_cli_errors(tmp_path, kind):
    inputs = sharp_folder(tmp_path / "in")
    result = make_cli(
        "--psf", bad_psf(tmp_path, kind), "--input", inputs, "--out", tmp_path / "out", cwd=tmp_path
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --psf "), result.stderr
    assert not (tmp_path / "out").exists()


def test_bad_folders_are_reported(tmp_path):
    np.save(tmp_path / "psf.npy", np.ones((3, 3)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PsfError, match="--input .*holds no images"):
        make_pairs(tmp_path / "psf.npy", tmp_path / "empty", tmp_path / "out")
    inputs = sharp_folder(tmp_path / "in")
    Image.open(inputs / "coffee.png").save(inputs / "coffee.jpg")
    with pytest.raises(PsfError, match="coffee.jpg and coffee.png would both become coffee.png"):
        make_pairs(tmp_path / "psf.npy", inputs, tmp_path / "out")
    (inputs / "coffee.jpg").unlink()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(PsfError, match="--out .*not empty"):
        make_pairs(tmp_path / "psf.npy", inputs, tmp_path / "full")
