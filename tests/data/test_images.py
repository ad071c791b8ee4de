"""Image decoding on real files of every kind a benchmark ships: the arrays a model sees."""

import warnings

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from demoe.data.images import ImageReadError, ImageWarning, image_size, probe_image, read_image


def rgb8(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth_rgb8(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def test_png_8bit_is_rgb_float32_in_unit_range(tmp_path):
    pixels = rgb8()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype == np.float32 and image.shape == (24, 32, 3)
    np.testing.assert_array_equal(image, pixels.astype(np.float32) / 255)


def test_png_16bit_colour_keeps_all_16_bits(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), pixels[..., ::-1])
    image = read_image(tmp_path / "deep.png")
    np.testing.assert_allclose(image, pixels / 65535, atol=1e-7)
    assert len(np.unique(np.round(image * 65535))) > 256


def test_png_16bit_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.random.default_rng(2).integers(0, 65536, (20, 30)).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    assert image.shape == (20, 30, 3)
    np.testing.assert_allclose(image[..., 0], gray / 65535, atol=1e-7)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_grayscale_8bit_becomes_three_channels(tmp_path):
    gray = rgb8()[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (24, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], gray / np.float32(255))


def test_jpeg_reads_close_to_its_source(tmp_path):
    pixels = smooth_rgb8()
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    image = read_image(tmp_path / "a.jpg")
    assert image.shape == (48, 64, 3)
    assert np.abs(image - pixels / 255).mean() < 0.02


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255), (np.uint16, 65535)])
def test_tiff_8_and_16_bit(tmp_path, dtype, scale):
    pixels = np.random.default_rng(3).integers(0, scale + 1, (16, 20, 3)).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", pixels)
    np.testing.assert_allclose(read_image(tmp_path / "a.tif"), pixels / scale, atol=1e-7)


def test_alpha_channel_is_dropped_with_a_warning(tmp_path):
    pixels = rgb8()
    rgba = np.dstack([pixels, np.full(pixels.shape[:2], 7, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    with pytest.warns(ImageWarning, match="a.png: alpha channel dropped"):
        image = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(image, pixels / np.float32(255))
    assert probe_image(tmp_path / "a.png").has_alpha


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    im = Image.fromarray(smooth_rgb8(24, 40))
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.jpg", exif=exif, quality=95)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.jpg")), dtype=np.float32) / 255
    image = read_image(tmp_path / "o.jpg")
    np.testing.assert_array_equal(image, expected)
    width, height = image_size(tmp_path / "o.jpg")
    assert (height, width) == image.shape[:2] == ((40, 24) if orientation >= 5 else (24, 40))


def test_truncated_file_header_still_reads_but_pixels_do_not(tmp_path):
    Image.fromarray(rgb8(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert image_size(tmp_path / "cut.png") == (64, 64)
    with pytest.raises(ImageReadError, match="cut.png: .*truncated"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(ImageReadError, match="cut.png: truncated"):
        probe_image(tmp_path / "cut.png")
    assert probe_image(tmp_path / "full.png").width == 64


def test_truncated_jpeg_is_caught_from_its_end(tmp_path):
    Image.fromarray(smooth_rgb8()).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:-40])
    with pytest.raises(ImageReadError, match="truncated"):
        probe_image(tmp_path / "cut.jpg")


def test_missing_and_non_image_files_name_the_file_and_reason(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.png: not an image file"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(ImageReadError, match="gone.png: file not found"):
        image_size(tmp_path / "gone.png")


def test_reading_never_warns_for_plain_rgb(tmp_path):
    Image.fromarray(rgb8()).save(tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(tmp_path / "a.png")
