"""aio-synth generation: layout, byte-identical regeneration, the split by photo, and safe generation."""

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demoe.data import aio_synth
from demoe.data.pairs import check, resolve
from demoe.vocab import TASKS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# test/defocus/blur/coffee_000.png as generator version 1 (before the val split) made it
FIRST_GENERATOR_TEST_PAIR = "dff097a6048700a5167b92b98cb3f1b657bc5c8b1c1f04dbf41061b1c8a10287"


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_generation_is_byte_identical_and_laid_out_as_the_registry_expects(tmp_path):
    first = aio_synth.generate(tmp_path / "a", seed=0, progress=False, subset=2)
    aio_synth.generate(tmp_path / "b", seed=0, progress=False, subset=2)
    aio_synth.generate(tmp_path / "c", seed=1, progress=False, subset=2)
    a, b, c = digests(tmp_path / "a"), digests(tmp_path / "b"), digests(tmp_path / "c")
    assert a == b
    assert {k for k in a if a[k] != c.get(k) and k.endswith(".png") and "/blur/" in k} == {
        k for k in a if "/blur/" in k
    }

    root = tmp_path / "a"
    for split in ("train", "val", "test"):
        for task in TASKS:
            blurred = sorted(p.name for p in (root / split / task / "blur").iterdir())
            sharp = sorted(p.name for p in (root / split / task / "sharp").iterdir())
            assert blurred == sharp and len(blurred) == 2
            for name in blurred:
                for kind in ("blur", "sharp"):
                    with Image.open(root / split / task / kind / name) as im:
                        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (256, 256))
                        assert not im.info.keys() - {"dpi"}
    wild = root / "wild" / "clock_motion.png"
    assert wild.read_bytes() == (aio_synth.skimage_data_dir() / "clock_motion.png").read_bytes()

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest == first
    assert manifest["generator_version"] == aio_synth.GENERATOR_VERSION and manifest["seed"] == 0
    assert len(manifest["pairs"]) == 3 * len(TASKS) * 2
    pair = manifest["pairs"][0]
    assert {"name", "task", "split", "source", "crop", "params"} <= pair.keys()
    assert (root / pair["split"] / pair["task"] / "blur" / f"{pair['name']}.png").is_file()


def test_blurred_and_sharp_differ_and_stay_aligned(tmp_path):
    aio_synth.generate(tmp_path / "set", progress=False, subset=1)
    for task in TASKS:
        folder = tmp_path / "set" / "test" / task
        name = next((folder / "blur").iterdir()).name
        blurred = np.asarray(Image.open(folder / "blur" / name), dtype=np.float64)
        sharp = np.asarray(Image.open(folder / "sharp" / name), dtype=np.float64)
        assert np.abs(blurred - sharp).mean() > 0.5, task
        if task != "low_light":
            centred = [np.corrcoef(blurred.ravel(), sharp.ravel())[0, 1]]
            for dy, dx in ((0, 2), (2, 0), (0, -2), (-2, 0)):
                shifted = np.roll(blurred, (dy, dx), axis=(0, 1))[4:-4, 4:-4]
                centred.append(np.corrcoef(shifted.ravel(), sharp[4:-4, 4:-4].ravel())[0, 1])
            assert centred[0] == max(centred), task


def test_train_val_and_test_share_no_photo_and_tasks_are_balanced():
    splits = {name: set(photos) for name, photos in aio_synth.SPLITS.items()}
    assert set(splits) == {"train", "val", "test"}
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert not train & test and not val & train and not val & test
    assert {"motorcycle_left.png", "motorcycle_right.png"} <= test
    sources = {name: aio_synth._source_file(name) for photos in splits.values() for name in photos}
    by_content = {}
    for name, path in sources.items():  # no photo is in two splits under two names either
        by_content.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(name)
    assert all(len(names) == 1 for names in by_content.values())
    plan = aio_synth._pair_plan(None)
    per_task = Counter((p["split"], p["task"]) for p in plan)
    assert set(per_task.values()) == {40, 15, 12} and len(per_task) == 3 * len(TASKS)
    for split, sources in aio_synth.SPLITS.items():
        for task in TASKS:
            uses = Counter(
                p["source"] for p in plan if p["split"] == split and p["task"] == task and not p["full"]
            )
            assert set(uses) == set(sources) and max(uses.values()) - min(uses.values()) <= 1
    full = [p for p in plan if p["full"]]
    assert len(full) == len(TASKS) and {p["split"] for p in full} == {"test"}


def test_interrupted_generation_is_not_taken_for_a_finished_one(tmp_path, monkeypatch):
    root = tmp_path / "aio-synth"
    written = []
    real_write = aio_synth.write_png

    def write_then_fail(path, image):
        if len(written) == 5:
            raise KeyboardInterrupt
        written.append(path)
        real_write(path, image)

    monkeypatch.setattr(aio_synth, "write_png", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        aio_synth.generate(root, progress=False, subset=1)
    assert not root.exists() and not aio_synth.is_generated(root)
    monkeypatch.setattr(aio_synth, "write_png", real_write)
    aio_synth.generate(root, progress=False, subset=1)
    assert (root / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".aio-synth.lock", "aio-synth"]


def test_only_a_complete_set_of_this_version_counts_as_generated(tmp_path):
    root = tmp_path / "aio-synth"
    aio_synth.generate(root, progress=False, subset=1)
    assert not aio_synth.is_generated(root), "a subset is not the benchmark"
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "subset": None, "generator_version": "0"}))
    assert not aio_synth.is_generated(root)
    (root / "manifest.json").write_text(json.dumps({**manifest, "subset": None}))
    assert aio_synth.is_generated(root)
    before = digests(root)
    assert aio_synth.ensure_generated(root) == root
    assert digests(root) == before, "a generated set is used as it is"


def test_generate_refuses_a_folder_holding_other_files(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(aio_synth.AioSynthError, match="no aio-synth manifest.json; move it away"):
        aio_synth.generate(tmp_path / "mine", progress=False, subset=1)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"


@pytest.mark.slow
def test_two_processes_starting_at_once_generate_the_full_set_once(tmp_path, monkeypatch):
    """The full set as `run` gets it on first use, by two ranks at once; its figures match the issue."""
    env = {
        **os.environ,
        "DEMOE_HOME": str(tmp_path / "home"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    code = "from demoe.data.aio_synth import ensure_generated; print(ensure_generated())"
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    seconds = time.perf_counter() - started
    assert [p.returncode for p in procs] == [0, 0], outputs
    root = tmp_path / "home" / "benchmarks" / "aio-synth"
    assert [out.strip() for out, _ in outputs] == [str(root)] * 2
    assert sum("generating aio-synth" in err for _, err in outputs) == 1
    assert seconds < 120

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["splits"]["train"]["pairs"] == 200 and manifest["splits"]["test"]["pairs"] == 75
    for split, count in (("train", 40), ("test", 15)):
        assert manifest["splits"][split]["pairs_per_task"] == dict.fromkeys(TASKS, count)
    sources = {
        split: {p["source"] for p in manifest["pairs"] if p["split"] == split} for split in ("train", "test")
    }
    assert not sources["train"] & sources["test"]

    monkeypatch.setenv("DEMOE_HOME", str(tmp_path / "home"))
    report = check(resolve("aio-synth"))
    assert report.ok and report.pairs == 75
    defocus = resolve("aio-synth/defocus", split="train")
    assert len(defocus.pairs) == 40 and {p.label for p in defocus.pairs} == {"defocus"}


def test_the_val_split_left_train_and_test_as_the_first_generator_made_them(tmp_path):
    """Pairs are seeded by (seed, split index, task, index) and val comes last, so adding it changed no
    train or test file: the test split's fingerprint is the one recorded before val existed."""
    root = tmp_path / "set"
    aio_synth.generate(root, seed=0, progress=False, subset=1)
    assert [split for split in aio_synth.SPLITS][:2] == ["train", "test"]
    blurred = root / "test" / "defocus" / "blur" / "coffee_000.png"
    assert hashlib.sha256(blurred.read_bytes()).hexdigest() == FIRST_GENERATOR_TEST_PAIR


def test_a_missing_val_photo_is_one_line_naming_the_package(monkeypatch):
    from importlib import metadata

    monkeypatch.setattr(metadata, "files", lambda name: [])
    with pytest.raises(aio_synth.AioSynthError, match="pyiqa does not ship ResultsCalibra/ref_dir/I03.bmp"):
        aio_synth._source_file("I03.bmp")
