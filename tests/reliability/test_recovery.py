"""Inputs that are unusual but valid, and damage the tools recover from: each must work, say what it
did, and record it where a reader of the results would look."""

import json

import numpy as np
import pytest
import yaml
from helpers import cli, tiny_run_args, write_pairs
from PIL import Image

from demoe.data.psf import load_psf
from demoe.finetune.options import STATE_FILE, TrainError
from demoe.finetune.state import load_saved


def run_on(folder, out, *extra):
    return cli(*tiny_run_args(folder, out, *extra))


def test_images_of_every_common_mode_and_depth_are_scored(tmp_path):
    folder = tmp_path / "bench"
    write_pairs(folder, 1, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    images = {
        "gray16": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
        "rgba": Image.fromarray(rgb).convert("RGBA"),
        "palette": Image.fromarray(rgb).convert("P"),
        "gray": Image.fromarray(rgb[..., 0]),
    }
    for name, image in images.items():
        image.save(folder / "blur" / f"{name}.png")
        image.save(folder / "sharp" / f"{name}.png")
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(folder / "blur" / "cmyk.jpg", quality=95)
    cmyk.save(folder / "sharp" / "cmyk.jpg", quality=95)
    result = run_on(folder, tmp_path / "out", "--routing", "auto")
    assert result.returncode == 0, result.stderr
    scored = json.loads((tmp_path / "out" / "results.json").read_text())["bench_info"]["pairs"]
    assert scored == 6


def test_a_benchmark_missing_pairs_is_scored_only_when_asked_and_then_recorded_as_partial(tmp_path):
    folder = tmp_path / "bench"
    write_pairs(folder, 2, np.random.default_rng(0))
    (folder / "benchmark.yaml").write_text(
        "name: declared\nlayout: {blurred: blur, sharp: sharp, files: ['*.png']}\n"
        "splits: {test: {pairs: 7}}\ntest_split: test\n"
    )
    refused = run_on(folder, tmp_path / "out")
    assert (
        refused.returncode == 1 and "found 2 pairs" in refused.stderr and "--allow-partial" in refused.stderr
    )
    ran = run_on(folder, tmp_path / "out", "--allow-partial")
    assert ran.returncode == 0, ran.stderr
    assert "partial benchmark: 2 of the 7 pairs" in ran.stderr
    info = json.loads((tmp_path / "out" / "results.json").read_text())["bench_info"]
    assert info["partial"] is True and info["expected_pairs"] == 7 and info["pairs"] == 2


def test_skipping_bad_pairs_also_skips_corrupt_pixels_behind_a_valid_header(tmp_path):
    folder = tmp_path / "bench"
    write_pairs(folder, 3, np.random.default_rng(0))
    data = bytearray((folder / "blur" / "1.png").read_bytes())
    start = data.index(b"IDAT") + 4
    data[start : start + 40] = bytes(range(40))
    (folder / "blur" / "1.png").write_bytes(bytes(data))
    failed = run_on(folder, tmp_path / "failed")
    assert failed.returncode == 1 and "1.png" in failed.stderr.splitlines()[-1]
    skipped = run_on(folder, tmp_path / "out", "--on-bad-pair", "skip")
    assert skipped.returncode == 0, skipped.stderr
    assert "1 bad pair(s) left out: 1" in skipped.stderr
    info = json.loads((tmp_path / "out" / "results.json").read_text())["bench_info"]
    assert info["skipped_bad_pairs"] == ["1"] and info["pairs"] == 2


def test_a_psf_of_huge_finite_values_blurs_as_the_same_psf_scaled_down(tmp_path):
    kernel = np.random.default_rng(0).random((5, 5))
    np.save(tmp_path / "huge.npy", kernel * 1e307)
    np.save(tmp_path / "unit.npy", kernel)
    huge, unit = load_psf(tmp_path / "huge.npy"), load_psf(tmp_path / "unit.npy")
    assert np.isfinite(huge).all() and np.allclose(huge, unit, rtol=1e-12)


def test_a_failed_bench_make_leaves_nothing_behind_and_the_rerun_works(tmp_path):
    sharp = tmp_path / "sharp"
    sharp.mkdir()
    Image.new("RGB", (24, 24), (200, 100, 50)).save(sharp / "a.png")
    (sharp / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    np.save(tmp_path / "psf.npy", np.ones((3, 3)))
    args = ["bench", "make", "--psf", str(tmp_path / "psf.npy"), "--input", str(sharp)]
    failed = cli(*args, "--out", str(tmp_path / "made"))
    assert failed.returncode == 1 and "b.png" in failed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["psf.npy", "sharp"]
    (sharp / "b.png").unlink()
    again = cli(*args, "--out", str(tmp_path / "made"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "made" / "blur" / "a.png").is_file()


def test_an_unreadable_training_state_names_the_weights_a_new_run_can_start_from(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "models").mkdir(parents=True)
    (run_dir / "models" / "latest.pt").write_bytes(b"weights")
    (run_dir / STATE_FILE).write_bytes(b"torn")
    with pytest.raises(TrainError, match="pretrain_network_g=.*latest.pt"):
        load_saved(run_dir, {}, insist=True)


@pytest.mark.slow
def test_registering_under_a_taken_name_keeps_the_earlier_entry_under_a_dated_name(tmp_path):
    zoo = tmp_path / "zoo"
    (zoo / "weights").mkdir(parents=True)
    (zoo / "weights" / "tiny-ft.safetensors").write_bytes(b"earlier weights")
    earlier = "name: tiny-ft\narch: DeMoE\nkwargs: {width: 8}\ncheckpoint: {file: tiny-ft.safetensors, path: weights/tiny-ft.safetensors}\n"
    (zoo / "tiny-ft.yaml").write_text(earlier)
    sets = ["name=tiny-ft", "train.total_iter=1", "datasets.train.limit=2", "datasets.train.batch_size=2"]
    sets.append("datasets.val.limit=1")
    args = ["finetune", "-c", "tiny_synth_restore", "--register-dir", str(zoo), "--no-tracking"]
    result = cli(
        *args, *(a for s in sets for a in ("--set", s)), "--out", str(tmp_path / "run"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    (kept,) = [p for p in zoo.glob("tiny-ft-*.yaml")]
    assert f"is kept as '{kept.stem}'" in result.stdout
    doc = yaml.safe_load(kept.read_text())
    assert doc["name"] == kept.stem and doc["kwargs"] == {"width": 8}
    assert (zoo / doc["checkpoint"]["path"]).read_bytes() == b"earlier weights"
    assert yaml.safe_load((zoo / "tiny-ft.yaml").read_text())["info"]["run_dir"] == str(tmp_path / "run")
