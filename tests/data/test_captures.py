"""A user's own captures: which files a folder, pattern or name gives, what reading them as RGB changes, and
PNG written at the input's bit depth."""

import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from demoe.data.captures import (
    CaptureError,
    compare_strip,
    conversion_note,
    find_captures,
    read_capture,
    write_png,
)
from demoe.data.images import probe_image


def smooth(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def tree(root):
    (root / "b" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for name in ("z.png", "a.jpg", "b/deep/c.tif", "b/x.webp", ".hidden/h.png", "b/._mac.jpg"):
        Image.fromarray(smooth()).save(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


def test_a_folder_gives_its_image_files_recursively_sorted_relative_to_it(tmp_path):
    root = tree(tmp_path / "shots")
    captures = find_captures([str(root)])
    assert [str(c.relative) for c in captures] == ["a.jpg", "b/deep/c.tif", "b/x.webp", "z.png"]
    assert all(c.path == root / c.relative for c in captures)


def test_the_output_folder_inside_an_input_folder_is_not_read_back(tmp_path):
    root = tree(tmp_path / "shots")
    (root / "restored").mkdir()
    Image.fromarray(smooth()).save(root / "restored" / "a.png")
    found = {str(c.relative) for c in find_captures([str(root)], skip=root / "restored")}
    assert "restored/a.png" not in found and "a.jpg" in found


def test_an_output_folder_around_the_captures_hides_none_of_them(tmp_path, monkeypatch):
    root = tree(tmp_path / "shots")
    monkeypatch.chdir(tmp_path)
    assert (
        len(find_captures(["shots"], skip=Path(".")))
        == len(find_captures(["shots/**/*.*"], skip=Path(".")))
        == 4
    )
    assert len(find_captures([str(root)], skip=tmp_path)) == 4


def test_a_pattern_names_files_relative_to_its_fixed_part_and_a_file_alone_by_its_name(tmp_path, monkeypatch):
    tree(tmp_path / "shots")
    monkeypatch.chdir(tmp_path)
    captures = find_captures(["shots/**/*.tif", "shots/z.png", "shots/z.png"])
    assert [(str(c.path), str(c.relative)) for c in captures] == [
        ("shots/b/deep/c.tif", "b/deep/c.tif"),
        ("shots/z.png", "z.png"),
    ]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["missing.png"], "missing.png: no such file or folder"),
        (["empty"], "empty: no image files in this folder"),
        (["*.nothing"], "*.nothing: no image file matches this pattern"),
        ([], "INPUTS: give at least one"),
    ],
)
def test_inputs_that_name_no_image_are_one_line_errors(tmp_path, monkeypatch, given, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(CaptureError, match="^" + message.replace("*", r"\*").replace(".", r"\.")):
        find_captures(given)


def test_conversions_to_rgb_are_named_and_plain_rgb_is_not(tmp_path):
    rgb = smooth()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    notes = {p.stem: conversion_note(probe_image(p)) for p in sorted(tmp_path.iterdir())}
    assert notes == {
        "rgb": None,
        "gray": "8-bit grayscale (L) read as RGB",
        "gray16": "16-bit grayscale (I;16) read as RGB",
        "palette": "palette image (P) read as RGB",
        "rgba": "RGBA read as RGB, alpha channel dropped",
        "cmyk": "CMYK read as RGB",
    }


def test_bit_depth_comes_from_the_file(tmp_path):
    rgb = smooth()
    Image.fromarray(rgb).save(tmp_path / "rgb8.png")
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb.astype(np.uint16)[..., ::-1] * 257)
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg")
    bits = {p.name: probe_image(p).bits for p in sorted(tmp_path.iterdir())}
    assert bits == {"gray16.png": 16, "rgb.jpg": 8, "rgb16.png": 16, "rgb8.png": 8}


@pytest.mark.parametrize(("bits", "dtype", "peak"), [(8, np.uint8, 255), (16, np.uint16, 65535)])
def test_png_is_written_at_its_bit_depth_with_the_umasks_mode(tmp_path, bits, dtype, peak):
    image = np.random.default_rng(0).random((10, 12, 3)).astype(np.float32)
    old = os.umask(0o027)
    try:
        path = write_png(tmp_path / "sub" / "out.png", image, bits)
    finally:
        os.umask(old)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert back.dtype == dtype and back.shape == (10, 12, 3)
    assert np.abs(back - image.astype(np.float64) * peak).max() <= 0.5 + 1e-2, "not rounded to nearest"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["out.png"], "a temporary file was left behind"
    np.testing.assert_allclose(read_capture(path), image, atol=0.5 / peak + 1e-6)


def test_a_compare_strip_puts_labelled_panels_side_by_side():
    a, b = np.zeros((40, 60, 3), np.float32), np.ones((40, 60, 3), np.float32)
    strip = compare_strip([("input", a), ("restored", b)])
    assert strip.dtype == np.uint8 and strip.shape[0] > 40 and strip.shape[1] >= 120
    band = strip.shape[0] - 40
    assert (strip[band:, :60] == 0).all() and (strip[band:, -60:] == 255).all()
    assert (strip[:band, :60] < 128).any(), "the label is missing"
