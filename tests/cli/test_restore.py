"""`demoe-eval restore` as a user runs it: a subprocess on a folder tree of real image files of several
modes and bit depths, the embedded default model, read back from disk (and from MLflow)."""

import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import TINY_A, cli
from PIL import Image, ImageFilter

from demoe.data.captures import Capture
from demoe.jobs.restore import RestoreConfig, RestoreError, plan, restore_captures
from demoe.vocab import TASKS

MOE_BLOCKS = 4  # DeMoE-tiny-synth's MoE blocks: after the middle blocks and each of its three decoder levels


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth photo-like RGB image, blurred a little."""
    coarse = np.random.default_rng(seed).integers(
        0, 256, (max(1, height // 8), max(1, width // 8), 3), np.uint8
    )
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC).filter(ImageFilter.GaussianBlur(1))
    return np.asarray(image)


def make_captures(root: Path) -> dict[str, tuple[int, int, int]]:
    """A folder tree of captures; returns relative output name -> (width, height, bits) expected."""
    (root / "day" / "raw").mkdir(parents=True)
    Image.fromarray(scene(48, 64, 0)).save(root / "rgb8.png")
    cv2.imwrite(str(root / "day" / "rgb16.png"), (scene(40, 56, 1).astype(np.uint16) * 257)[..., ::-1])
    Image.fromarray(scene(32, 48, 2)[..., 0].astype(np.uint16) * 257).save(root / "day" / "gray16.png")
    Image.fromarray(scene(40, 32, 3)).convert("RGBA").save(root / "day" / "raw" / "rgba.png")
    Image.fromarray(scene(32, 40, 4)).convert("P").save(root / "palette.gif")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated a quarter turn: portrait
    Image.fromarray(scene(32, 64, 5)).save(root / "day" / "rotated.jpg", exif=exif, quality=95)
    return {
        "rgb8.png": (64, 48, 8),
        "day/rgb16.png": (56, 40, 16),
        "day/gray16.png": (48, 32, 16),
        "day/raw/rgba.png": (32, 40, 8),
        "palette.png": (40, 32, 8),
        "day/rotated.png": (32, 64, 8),
    }


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def png_info(path: Path) -> tuple[int, int, int]:
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert array.ndim == 3 and array.shape[2] == 3, f"{path} is not RGB"
    return array.shape[1], array.shape[0], 16 if array.dtype == np.uint16 else 8


@pytest.mark.slow
def test_a_folder_tree_is_restored_at_its_paths_sizes_and_bit_depths_and_a_rerun_skips_it(tmp_path):
    captures = tmp_path / "captures"
    expected = make_captures(captures)
    (captures / "day" / "broken.png").write_bytes((captures / "rgb8.png").read_bytes()[:150])
    before = digests(captures)
    out = tmp_path / "restored"

    first = cli("restore", "captures", "--out", str(out), "--compare", cwd=tmp_path)
    assert first.returncode == 1 and "Traceback" not in first.stderr
    errors = [line for line in first.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: 1 of 7 images could not be read (captures/day/broken.png); the others are restored in {out}"
    ]
    assert "captures/day/broken.png: cannot read it (truncated" in first.stderr
    assert "captures/day/gray16.png: 16-bit grayscale (I;16) read as RGB" in first.stderr
    assert "captures/palette.gif: palette image (P) read as RGB" in first.stderr
    assert "captures/day/raw/rgba.png: RGBA read as RGB, alpha channel dropped" in first.stderr
    assert digests(captures) == before, "an input was changed"

    for name, (width, height, bits) in expected.items():
        assert png_info(out / name) == (width, height, bits), name
        strip = Image.open(out / "compare" / name)
        assert strip.height > height and strip.width >= 2 * width, f"{name}: not input | restored"
    assert not (out / "day" / "broken.png").exists()

    table = pd.read_csv(out / "restore.csv")
    assert table.equals(pd.read_parquet(out / "restore.parquet"))
    assert sorted(table["output"]) == sorted(expected)
    assert (table["mode"] == "auto").all()
    assert table["width"].tolist() == [expected[o][0] for o in table["output"]]
    probs = table[[f"p_{t}" for t in TASKS]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert table["pred_task"].tolist() == [TASKS[i] for i in probs.argmax(axis=1)]
    np.testing.assert_allclose(table["confidence"], probs.max(axis=1), atol=1e-6)
    for experts, task in zip(table["experts"], table["pred_task"], strict=True):
        assert experts.split() == [str(TASKS.index(task))] * MOE_BLOCKS  # k=1: the predicted task's expert
    for row in table.itertuples():
        printed = rf"{re.escape(row.file)} +{row.width}x{row.height} +{row.bits} +{row.pred_task} +"
        assert re.search(rf"{printed}{100 * row.confidence:.1f}% +\d+\.\d+", first.stdout), row.file

    restored_at = {name: (out / name).stat().st_mtime_ns for name in expected}
    with open(out / "manifest.rank0.jsonl", "a") as f:
        f.write('{"key": "torn by a kill')
    again = cli("restore", "captures", "--out", str(out), "--compare", cwd=tmp_path)
    assert again.returncode == 1, again.stderr
    assert "0 restored, 6 done before, 1 unreadable" in again.stdout
    assert {name: (out / name).stat().st_mtime_ns for name in expected} == restored_at
    pd.testing.assert_frame_equal(pd.read_csv(out / "restore.csv"), table)

    (captures / "rgb8.png").write_bytes((captures / "day" / "raw" / "rgba.png").read_bytes())
    changed = cli("restore", "captures", "--out", str(out), cwd=tmp_path)
    assert "1 restored, 5 done before" in changed.stdout, "a changed input or dropped --compare"
    assert png_info(out / "rgb8.png") == (32, 40, 8)


@pytest.mark.slow
def test_a_forced_task_and_all_tasks_with_published_spellings(tmp_path):
    Image.fromarray(scene(48, 64)).save(tmp_path / "photo.png")
    base = ["restore", "--model", "DeMoE-tiny", "-c", str(TINY_A), "-i", "photo.png"]
    forced = cli(*base, "-t", "low_light", "--out", "forced", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    row = pd.read_csv(tmp_path / "forced" / "restore.csv").iloc[0]
    assert row["mode"] == "low_light" and row["output"] == "photo.png"
    assert set(row["experts"].split()) == {str(TASKS.index("low_light"))}

    every = cli(*base, "--task", "all", "--compare", "--out", "all", cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    table = pd.read_csv(tmp_path / "all" / "restore.csv")
    assert table["mode"].tolist() == ["auto", *TASKS]
    assert table["output"].tolist() == [f"{m}/photo.png" for m in ["auto", *TASKS]]
    assert table["pred_task"].nunique() == 1, "one routing decision per image, whatever is forced"
    for task in TASKS:
        forced_row = table[table["mode"] == task].iloc[0]
        assert set(forced_row["experts"].split()) == {str(TASKS.index(task))}
    low_light = cv2.imread(str(tmp_path / "all" / "low_light" / "photo.png"))
    assert np.array_equal(low_light, cv2.imread(str(tmp_path / "forced" / "photo.png")))
    strip = Image.open(tmp_path / "all" / "compare" / "photo.png")
    assert strip.width >= 7 * 64 and strip.height > 48, "input, auto and five forced panels"


@pytest.mark.slow
def test_tiles_restore_at_full_size_close_to_the_whole_image(tmp_path):
    """Above ``--tile`` (and the 1024 px routing side) an image is restored in tiles, as ``run`` does."""
    Image.fromarray(scene(40, 1100)).save(tmp_path / "wide.png")
    for name, extra in (("whole", []), ("tiled", ["--tile", "256", "--tile-overlap", "32"])):
        done = cli("restore", "wide.png", "-t", "defocus", "--out", name, *extra, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    whole = cv2.imread(str(tmp_path / "whole" / "wide.png")).astype(np.float64) / 255
    tiled = cv2.imread(str(tmp_path / "tiled" / "wide.png")).astype(np.float64) / 255
    assert tiled.shape == whole.shape == (40, 1100, 3)
    difference = np.abs(tiled - whole)
    assert 0 < difference.max() < 0.05, "not tiled, or a seam"
    assert 10 * np.log10(1 / (difference**2).mean()) > 45


def test_an_output_onto_an_input_is_a_one_line_error_and_writes_nothing(tmp_path):
    Image.fromarray(scene(32, 32)).save(tmp_path / "a.png")
    before = digests(tmp_path)
    done = cli("restore", "a.png", "--out", ".", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: --out .: would write a.png over the input a.png; choose another --out"
    ]
    assert digests(tmp_path) == before


def test_the_input_folder_as_output_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "shots").mkdir()
    Image.fromarray(scene(32, 32)).save(tmp_path / "shots" / "a.jpg")
    with pytest.raises(
        RestoreError, match=r"^--out .*shots: is the input folder .*shots; choose another --out"
    ):
        restore_captures(RestoreConfig(inputs=(str(tmp_path / "shots"),), out=tmp_path / "shots" / "."))
    assert [p.name for p in (tmp_path / "shots").iterdir()] == ["a.jpg"]


def test_two_captures_with_one_output_name_are_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    captures = [Capture(tmp_path / "x.jpg", Path("x.jpg")), Capture(tmp_path / "x.png", Path("x.png"))]
    with pytest.raises(RestoreError, match=r"x\.jpg and .*x\.png would both be written to .*out/x\.png"):
        plan(captures, ["auto"], out, compare=False)
    jobs = plan(captures[:1], ["auto", "defocus"], out, compare=True)
    assert jobs[0].outputs == {"auto": out / "auto" / "x.png", "defocus": out / "defocus" / "x.png"}
    assert jobs[0].strip == out / "compare" / "x.png"


@pytest.mark.slow
def test_tracked_restore_is_an_mlflow_run_with_the_table_and_strips(tmp_path):
    import mlflow

    Image.fromarray(scene(32, 48)).save(tmp_path / "a.png")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = cli("restore", "a.png", "--compare", "--tracking", "--tracking-uri", uri, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1].removeprefix("mlflow run: ")
    mlflow.set_tracking_uri(uri)
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.data.tags["demoe.kind"] == "restore" and run.data.tags["demoe.model"] == "DeMoE-tiny-synth"
    assert run.data.metrics["images"] == 1
    client = mlflow.MlflowClient()
    assert {"restore.csv", "restore.parquet", "restore.json", "compare"} <= {
        a.path for a in client.list_artifacts(run_id)
    }
    assert [a.path for a in client.list_artifacts(run_id, "compare")] == ["compare/a.png"]
    summary = json.loads((tmp_path / "restored" / "restore.json").read_text())
    assert summary["key"]["checkpoint_sha256"] == run.data.tags["demoe.checkpoint_sha256"]


@pytest.mark.slow
def test_two_processes_restore_the_same_images_as_one(tmp_path):
    make_captures(tmp_path / "captures")
    one = cli("restore", "captures", "--out", "one", cwd=tmp_path)
    two = cli("restore", "captures", "--out", "two", "--nproc", "2", cwd=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    assert len(list((tmp_path / "two").glob("manifest.rank*.jsonl"))) == 2
    columns = ["file", "output", "width", "height", "bits", "pred_task", *(f"p_{t}" for t in TASKS)]
    a = pd.read_csv(tmp_path / "one" / "restore.csv")[columns]
    pd.testing.assert_frame_equal(a, pd.read_csv(tmp_path / "two" / "restore.csv")[columns], atol=1e-5)
