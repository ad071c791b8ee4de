"""demoe-eval as a user installs it: a wheel built from the sdist, in a fresh virtualenv, run from an
empty folder. The new venv reaches the test environment's dependencies through a ``.pth`` line (so
nothing is downloaded or reinstalled) but not its editable install of this checkout."""

import os
import stat
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from demoe import paths

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_a_checkout_reads_its_top_level_manifest_folders():
    for name in paths.SHIPPED:
        assert paths.shipped_dir(name) == PROJECT_ROOT / name


def test_an_installed_copy_is_preferred_to_the_folder_beside_the_package(tmp_path, monkeypatch):
    package = tmp_path / "site" / "demoe"
    (package / "_shipped" / "zoo").mkdir(parents=True)
    monkeypatch.setattr(paths.resources, "files", lambda name: package)
    assert paths.shipped_dir("zoo") == package / "_shipped" / "zoo"
    assert paths.shipped_dir("benchmarks") == PROJECT_ROOT / "benchmarks"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    # python -m build: the sdist first, then the wheel from the unpacked sdist
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(PROJECT_ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = dist.glob("*.whl")
    return built


def test_the_wheel_carries_the_manifests_weights_and_licence(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in paths.SHIPPED:
        shipped = {p.relative_to(PROJECT_ROOT).as_posix() for p in (PROJECT_ROOT / folder).rglob("*.*")}
        assert {f"demoe/_shipped/{n}" for n in shipped} <= names
    assert "demoe/_shipped/zoo/weights/DeMoE-tiny-synth.safetensors" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "opencv-python-headless" in metadata and "Requires-Dist: opencv-python>" not in metadata


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    return env_dir


def _user(installed: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "MLFLOW", "DEMOE"))
    }
    env |= {"DEMOE_HOME": str(folder / "home"), "OMP_NUM_THREADS": "1", "HOME": str(folder)}
    return subprocess.run(
        [str(installed / "bin" / "demoe-eval"), *args],
        cwd=folder / "work",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: os.umask(0o022),
    )


@pytest.mark.slow
def test_the_installed_wheel_works_from_an_empty_folder(installed, tmp_path):
    (tmp_path / "work").mkdir()
    where = subprocess.run(
        [installed / "bin" / "python", "-c", "import demoe; print(demoe.__file__)"],
        cwd=tmp_path / "work",
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
    )
    assert where.stdout.startswith(str(installed)), where.stdout + where.stderr

    listed = _user(installed, tmp_path, "zoo", "list")
    assert listed.returncode == 0, listed.stderr
    assert "DeMoE-tiny-synth" in listed.stdout and "available" in listed.stdout

    benches = _user(installed, tmp_path, "bench", "list")
    assert benches.returncode == 0, benches.stderr
    assert "aio-synth" in benches.stdout and "DRMI" in benches.stdout

    shown = _user(installed, tmp_path, "zoo", "show", "DeMoE")
    assert "CC BY-NC-SA 4.0" in shown.stdout

    ran = _user(installed, tmp_path, "run", "--limit", "2", "--routing", "auto", "--metrics", "psnr")
    assert ran.returncode == 0, ran.stderr
    assert "DeMoE-tiny-synth on aio-synth" in ran.stdout
    results = tmp_path / "work" / "results" / "DeMoE-tiny-synth@aio-synth" / "results.json"
    assert results.is_file()
    written = [p for p in (tmp_path / "work").rglob("*") if p.is_file() and p.suffix != ".db"]
    assert len(written) > 5
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {"0o644"}

    trained = _user(
        installed,
        tmp_path,
        "finetune",
        "-c",
        "experiments/tiny_synth_restore.yaml",
        "--no-tracking",
        "--set",
        "train.total_iter=2",
        "--set",
        "datasets.train.batch_size=2",
        "--set",
        "datasets.train.limit=4",
        "--set",
        "datasets.val.limit=2",
        "--set",
        "logger.print_freq=1",
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "registered as zoo model 'DeMoE-tiny-synth-restore'" in trained.stdout

    by_name = _user(installed, tmp_path, "finetune", "-c", "no_such_recipe")
    assert by_name.returncode != 0
    assert "tiny_synth_restore" in by_name.stderr and "Traceback" not in by_name.stderr


def test_python_m_demoe_is_the_command_line():
    done = subprocess.run([sys.executable, "-m", "demoe", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "Usage: demoe-eval" in done.stdout
