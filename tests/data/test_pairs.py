"""The benchmark registry on real folders of image files: manifests, pairing, problems, fingerprints, CLI."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from demoe.data.pairs import check, good_pairs, resolve
from demoe.registry import benchmarks
from demoe.registry.benchmarks import BenchmarkError, load_registry
from demoe.vocab import TASKS

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def write_png(path: Path, size: tuple[int, int] = (32, 24), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def make_pairs(folder: Path, names, blurred: str = "blur", sharp: str = "sharp", size=(32, 24)) -> Path:
    for i, name in enumerate(names):
        write_png(folder / blurred / f"{name}.png", size, seed=i)
        write_png(folder / sharp / f"{name}.png", size, seed=100 + i)
    return folder


def write_manifest(folder: Path, doc: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return folder


def cli(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "demoe.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_shipped_manifests_describe_the_public_benchmarks():
    specs = load_registry()
    expected_test_pairs = {
        "GoPro": 1111,
        "HIDE": 2025,
        "RealBlur-J": 980,
        "RealBlur-R": 980,
        "DPDD": 76,
        "RealDOF": 50,
        "LOLBlur": 1800,
        "ReLoBlur": 395,
        "RSBlur": 3360,
    }
    for name, pairs in expected_test_pairs.items():
        spec = specs[name]
        assert spec.splits[spec.test_split].pairs == pairs, name
        assert spec.task in TASKS and spec.url and spec.description, name
    assert specs["DRMI"].task is None and specs["DRMI"].labels == []
    assert specs["aio-synth"].labels == list(TASKS) and specs["aio-synth"].generated == "aio-synth"
    assert "align" in specs["RealBlur-J"].protocol_note and "align" in specs["RealBlur-R"].protocol_note
    assert specs["DPDD"].protocol["quantize_8bit"] is False
    assert specs["RealBlur-J"].splits["test"].subsets[0].pair_list == "RealBlur_J_{split}_list.txt"


def test_aio_synth_manifest_matches_the_generated_layout(tmp_path, isolated_home):
    root = isolated_home / "benchmarks" / "aio-synth"
    for split in ("train", "test"):
        for task in TASKS:
            make_pairs(root / split / task, [f"astronaut_{split}", f"coffee_{split}"])
    write_png(root / "wild" / "clock_motion.png")
    (root / "manifest.json").write_text("{}")
    doc = yaml.safe_load((PROJECT_ROOT / "benchmarks" / "aio-synth.yaml").read_text())
    doc.pop("generated")
    doc["name"] = "aio-local"
    bench_dir = write_manifest(tmp_path / "manifests", doc)

    bench = resolve("aio-local", bench_dirs=[bench_dir])
    assert bench.split == "test" and not bench.problems
    assert [p.name for p in bench.pairs[:2]] == ["defocus/astronaut_test", "defocus/coffee_test"]
    assert {p.label for p in bench.pairs} == set(TASKS) and len(bench.pairs) == 10
    assert all(p.label == p.name.split("/")[0] for p in bench.pairs)

    one = resolve("aio-local/low_light", split="train", bench_dirs=[bench_dir])
    assert one.spec.name == "aio-local/low_light" and one.spec.task == "low_light"
    assert [p.name for p in one.pairs] == ["low_light/astronaut_train", "low_light/coffee_train"]


def test_generated_benchmark_without_its_generator_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(benchmarks.GENERATORS, "aio-synth", "demoe.data.no_such_generator")
    with pytest.raises(BenchmarkError, match="aio-synth: its generator demoe.data.no_such_generator"):
        resolve("aio-synth")


def test_bare_folder_pairs_by_name_in_sorted_order(tmp_path):
    make_pairs(tmp_path / "mine", ["b", "a", "c"])
    bench = resolve(str(tmp_path / "mine"))
    assert [p.name for p in bench.pairs] == ["a", "b", "c"]
    assert bench.spec.name == "mine" and bench.spec.task is None and bench.split == "all"
    assert all(p.label is None and p.blurred.parent.name == "blur" for p in bench.pairs)
    assert check(bench).ok


def test_bare_folder_with_meta_and_ground_truth_and_a_test_split(tmp_path):
    make_pairs(tmp_path / "DRMI_dataset" / "test", ["x1", "x2"], "meta", "ground_truth")
    make_pairs(tmp_path / "DRMI_dataset" / "train", ["t1"], "meta", "ground_truth")
    bench = resolve(str(tmp_path / "DRMI_dataset"))
    assert bench.split == "test" and [p.name for p in bench.pairs] == ["x1", "x2"]
    assert [p.name for p in resolve(str(tmp_path / "DRMI_dataset"), split="train").pairs] == ["t1"]


def test_bare_folder_of_task_folders_is_labelled(tmp_path):
    make_pairs(tmp_path / "set" / "defocus", ["a"])
    make_pairs(tmp_path / "set" / "low_light", ["a"])
    make_pairs(tmp_path / "set" / "my_own", ["a"])
    bench = resolve(str(tmp_path / "set"))
    assert [(p.name, p.label) for p in bench.pairs] == [
        ("defocus/a", "defocus"),
        ("low_light/a", "low_light"),
        ("my_own/a", None),
    ]


def test_folder_without_pair_folders_says_which_it_expects(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkError, match="blur/\\+sharp/"):
        resolve(str(tmp_path / "empty"))


def test_drmi_manifest_reads_the_data_root_from_option_and_environment(tmp_path, monkeypatch):
    make_pairs(tmp_path / "root" / "DRMI_dataset" / "test", ["m1", "m2"], "meta", "ground_truth")
    assert [p.name for p in resolve("DRMI", data_root=tmp_path / "root").pairs] == ["m1", "m2"]
    monkeypatch.setenv("DEMOE_DATA", str(tmp_path / "root"))
    bench = resolve("DRMI")
    assert bench.root == tmp_path / "root" / "DRMI_dataset" and bench.pairs[0].label is None
    with pytest.raises(BenchmarkError, match="no data at .*GOPRO_Large; download it from https://"):
        resolve("GoPro")
    with pytest.raises(BenchmarkError, match="DRMI: no split 'val'; choose one of: train, test"):
        resolve("DRMI", split="val")


def test_unknown_name_suggests_close_ones():
    with pytest.raises(BenchmarkError, match="Did you mean: GoPro"):
        resolve("GoPr")


def test_per_sequence_subsets_like_gopro(tmp_path):
    root = tmp_path / "data" / "GOPRO_Large"
    make_pairs(root / "test" / "GOPR0384_11_00", ["000001", "000002"])
    make_pairs(root / "test" / "GOPR0385_11_01", ["000001"])
    bench = resolve("GoPro", data_root=tmp_path / "data")
    assert [p.name for p in bench.pairs] == [
        "GOPR0384_11_00/000001",
        "GOPR0384_11_00/000002",
        "GOPR0385_11_01/000001",
    ]
    assert {p.label for p in bench.pairs} == {"synth_global_motion"}
    report = check(bench)
    assert report.pairs == 3 and report.expected == 1111 and not report.problems and not report.ok
    one = resolve("GoPro/GOPR0385_11_01", data_root=tmp_path / "data")
    assert [p.name for p in one.pairs] == ["GOPR0385_11_01/000001"] and one.expected is None
    with pytest.raises(BenchmarkError, match="no subset 'GOPR9999'.*GOPR0384_11_00, GOPR0385_11_01"):
        resolve("GoPro/GOPR9999", data_root=tmp_path / "data")


def test_shared_ground_truth_folder_like_hide(tmp_path):
    root = tmp_path / "HIDE_dataset"
    for i, name in enumerate(["c1", "c2", "l1", "t1"]):
        write_png(root / "GT" / f"{name}.png", seed=i)
    for name in ["c1", "c2"]:
        write_png(root / "test" / "test-close-ups" / f"{name}.png")
    write_png(root / "test" / "test-long-shot" / "l1.png")
    bench = resolve("HIDE", data_root=tmp_path)
    assert [p.name for p in bench.pairs] == ["close-ups/c1", "close-ups/c2", "long-shot/l1"]
    assert not bench.problems


def test_pair_lists_like_realblur(tmp_path):
    root = tmp_path / "RealBlur"
    scene = "RealBlur-J_ECC_IMCORR_centroid_itensity_ref"
    lines = []
    for s in ("scene001", "scene002"):
        write_png(root / scene / s / "blur" / "blur_1.png")
        write_png(root / scene / s / "gt" / "gt_1.png", seed=5)
        lines.append(f"{scene}/{s}/gt/gt_1.png {scene}/{s}/blur/blur_1.png")
    lines.append(f"{scene}/scene003/gt/gt_1.png {scene}/scene003/blur/blur_1.png")
    (root / "RealBlur_J_test_list.txt").write_text("\n".join(lines) + "\n")
    bench = resolve("RealBlur-J", data_root=tmp_path)
    assert [p.name for p in bench.pairs] == ["scene001/blur/blur_1", "scene002/blur/blur_1"]
    assert bench.pairs[0].sharp.name == "gt_1.png" and bench.pairs[0].blurred.name == "blur_1.png"
    assert [(p.name, p.reason.split(":")[0]) for p in bench.problems] == [
        ("scene003/blur/blur_1", "missing partner")
    ]


def test_check_reports_missing_partner_duplicate_size_mismatch_and_truncation(tmp_path):
    folder = make_pairs(tmp_path / "bad", ["ok", "small", "cut", "dup"])
    (folder / "sharp" / "lonely.png").write_bytes((folder / "sharp" / "ok.png").read_bytes())
    write_png(folder / "blur" / "orphan.png")
    write_png(folder / "sharp" / "small.png", size=(30, 24))
    Image.open(folder / "blur" / "dup.png").save(folder / "blur" / "dup.jpg")
    data = (folder / "blur" / "cut.png").read_bytes()
    (folder / "blur" / "cut.png").write_bytes(data[: len(data) // 2])

    bench = resolve(str(folder))
    assert [p.name for p in bench.pairs] == ["cut", "ok", "small"]
    report = check(bench)
    found = {(p.name, p.file.name): p.reason for p in report.problems}
    assert found[("cut", "cut.png")].startswith("unreadable: truncated")
    assert found[("dup", "dup.jpg")] == "duplicate name: dup.jpg and dup.png would both pair as dup"
    assert found[("lonely", "lonely.png")].startswith("missing partner: no blurred image lonely")
    assert found[("orphan", "orphan.png")].startswith("missing partner: no sharp image orphan")
    assert found[("small", "small.png")] == "size mismatch: sharp 30x24, blurred 32x24"
    assert len(found) == 5 and not report.ok

    with pytest.raises(BenchmarkError, match="5 bad pair\\(s\\), first .*cut.png: unreadable: truncated"):
        good_pairs(bench, report)
    assert [p.name for p in good_pairs(bench, report, on_bad_pair="skip")] == ["ok"]


def test_header_check_misses_corrupt_pixels_that_a_pixel_check_finds(tmp_path):
    folder = make_pairs(tmp_path / "b", ["a"], size=(64, 64))
    path = folder / "blur" / "a.png"
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 40
    data[start : start + 200] = bytes(200)
    path.write_bytes(bytes(data))
    bench = resolve(str(folder))
    assert check(bench).ok
    problems = check(bench, read_pixels=True).problems
    assert [(p.name, p.file.name) for p in problems] == [("a", "a.png")]
    assert problems[0].reason.startswith("unreadable:")


def test_fingerprint_changes_with_a_file_size_and_nothing_else(tmp_path):
    folder = make_pairs(tmp_path / "f", ["a", "b"])
    first = check(resolve(str(folder))).fingerprint
    assert check(resolve(str(folder))).fingerprint == first
    os.utime(folder / "blur" / "a.png", (1, 1))
    assert check(resolve(str(folder))).fingerprint == first
    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "renamed")
    assert check(resolve(str(moved))).fingerprint == first
    with open(folder / "sharp" / "b.png", "ab") as f:
        f.write(b"\0")
    assert check(resolve(str(folder))).fingerprint != first


def test_manifest_mistakes_name_the_file(tmp_path):
    bad = write_manifest(
        tmp_path / "m", {"name": "Mine", "root": "x", "splits": {"test": {}}, "task": "blurry"}
    )
    with pytest.raises(BenchmarkError, match="Mine.yaml: task 'blurry' is not one of defocus"):
        load_registry([bad])
    bad = write_manifest(
        tmp_path / "n", {"name": "Mine", "root": "x", "splits": {"test": {}}, "colour": "rgb"}
    )
    with pytest.raises(BenchmarkError, match="Mine.yaml: unknown keys \\['colour'\\]"):
        load_registry([bad])
    doc = {"name": "Mine", "root": "x", "splits": {"test": {}}, "protocol": {"color": "lab"}}
    with pytest.raises(BenchmarkError, match="protocol takes color"):
        load_registry([write_manifest(tmp_path / "o", doc)])


def test_user_manifest_with_file_patterns_and_its_own_protocol(tmp_path):
    root = tmp_path / "data" / "Lab"
    for i in range(3):
        write_png(root / "captures" / f"shot{i}_blurry.png", seed=i)
        write_png(root / "captures" / f"shot{i}_sharp.png", seed=9)
    doc = {
        "name": "Lab",
        "root": "Lab",
        "task": "defocus",
        "layout": {
            "blurred": "captures",
            "sharp": "captures",
            "blurred_files": "*_blurry.png",
            "sharp_files": "*_sharp.png",
        },
        "splits": {"test": {"pairs": 3}},
        "protocol": {"color": "y", "crop_border": 4},
    }
    bench = resolve("Lab", data_root=tmp_path / "data", bench_dirs=[write_manifest(tmp_path / "m", doc)])
    assert [p.name for p in bench.pairs] == ["shot0", "shot1", "shot2"] and not bench.problems
    assert bench.spec.protocol == {"color": "y", "crop_border": 4, "quantize_8bit": True}
    assert check(bench).ok


@pytest.mark.slow
def test_cli_bench_list_show_and_check(tmp_path):
    data = tmp_path / "data"
    make_pairs(data / "DRMI_dataset" / "test", ["m1", "m2", "m3"], "meta", "ground_truth")
    listing = cli("bench", "list", "--data-root", str(data), cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[1:]}
    assert rows["DRMI"][1:5] == ["-", "test", "?", "3"]
    assert rows["GoPro"][1:5] == ["synth_global_motion", "test", "1111", "no"]
    assert "aio-synth" in rows

    shown = cli("bench", "show", "RealBlur-J", cwd=tmp_path)
    assert shown.returncode == 0 and "protocol_note:" in shown.stdout and "licence:" in shown.stdout

    good = cli("bench", "check", "DRMI", "--data-root", str(data), cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "pairs: 3" in good.stdout and "fingerprint: " in good.stdout

    (data / "DRMI_dataset" / "test" / "ground_truth" / "m2.png").unlink()
    bad = cli("bench", "check", str(data / "DRMI_dataset"), cwd=tmp_path)
    assert bad.returncode == 1
    assert "m2" in bad.stdout and "missing partner" in bad.stdout and "meta/m2.png" in bad.stdout
    assert "1 problem(s)" in bad.stderr and "Traceback" not in bad.stderr

    unknown = cli("bench", "check", "GoPr", cwd=tmp_path)
    assert (
        unknown.returncode == 1
        and "Did you mean: GoPro" in unknown.stderr
        and "Traceback" not in unknown.stderr
    )


def test_bare_folder_named_after_a_task_is_labelled(tmp_path):
    make_pairs(tmp_path / "test" / "defocus", ["a"])
    bench = resolve(str(tmp_path / "test" / "defocus"))
    assert bench.spec.task == "defocus" and [p.label for p in bench.pairs] == ["defocus"]


@pytest.mark.slow
def test_aio_synth_is_generated_on_first_use_and_checks_clean():
    pytest.importorskip("demoe.data.aio_synth")
    bench = resolve("aio-synth")
    report = check(bench)
    assert report.ok and report.expected == report.pairs > 0
    assert {p.label for p in bench.pairs} == set(TASKS)
    one = resolve("aio-synth/low_light")
    assert one.expected == len(one.pairs) > 0 and {p.label for p in one.pairs} == {"low_light"}


def test_a_symlink_loop_in_a_benchmark_folder_is_walked_once(tmp_path):
    for sub in ("blur", "sharp"):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / sub / "a.png")
        (tmp_path / sub / "again").symlink_to(tmp_path / sub, target_is_directory=True)
    bench = resolve(str(tmp_path))
    assert [p.name for p in bench.pairs] == ["a"] and not bench.problems
