"""`demoe-eval report` end to end: real evaluations by the CLI, the report by the CLI, the page in Chromium."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from .conftest import FIXTURES, make_plain_bench, make_task_bench

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "demoe.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def browser_dom(page: Path, profile: Path) -> str:
    """The page's DOM after load, as headless Chromium leaves it."""
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_report_of_a_real_evaluation_is_stable_and_every_image_loads_in_chromium(tmp_path):
    bench = make_task_bench(tmp_path / "mini-aio")
    plain = make_plain_bench(tmp_path / "plain")
    (tmp_path / "no-weights").mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--model", "DeMoE-tiny", "--checkpoint", str(FIXTURES / "tiny_a.pt"), "--workers", "0"]
    common += ["--metrics", "psnr,ssimc,lpips", "--weights-dir", str(tmp_path / "no-weights")]
    common += ["--tracking-uri", uri, "--experiment", "e2e"]
    for bench_dir, extra in ((bench, ["--routing", "auto,oracle", "--save-images", "10"]), (plain, [])):
        result = cli(
            "run",
            *common,
            "--bench",
            str(bench_dir),
            "--out",
            str(tmp_path / bench_dir.name),
            *extra,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr

    report = cli("report", "--experiment", "e2e", "--tracking-uri", uri, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    out = tmp_path / "reports" / "e2e"
    assert "report: reports/e2e/report.html" in report.stdout
    main = (out / "tables" / "main.md").read_text()
    assert main in report.stdout
    per_image = pd.read_parquet(tmp_path / "mini-aio" / "per_image.parquet")
    auto = per_image[per_image["mode"] == "auto"]["psnr"].mean()
    row = next(line for line in main.splitlines() if line.startswith("| DeMoE-tiny | auto |"))
    cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
    mean, _, interval = cells[2].partition(" [")  # the mean, then its bootstrap interval
    assert mean.strip("*") == f"{auto:.2f}" and interval.endswith("]") and cells[4] == "n/a"

    again = cli(
        "report", "--experiment", "e2e", "--tracking-uri", uri, "--out", "reports/again", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        assert path.read_bytes() == (tmp_path / "reports" / "again" / path.relative_to(out)).read_bytes(), (
            path
        )

    if CHROMIUM is None:
        pytest.skip(
            "Chromium is not installed (apt-get install chromium); the page was not opened in a browser"
        )
    dom = browser_dom(out / "report.html", tmp_path / "chromium")
    states = re.findall(r'<img [^>]*data-loaded="(yes|no)"', dom)
    figures = len(list((out / "figures").glob("*.png")))
    assert states == ["yes"] * figures and figures == 6
    assert f'data-images-checked="{figures}"' in dom
    widest = int(re.search(r'data-widest-table="(\d+)"', dom).group(1))
    assert 0 < widest <= 1320, f"a table is {widest} px wide: wider than the page"
    for table in ("main", "per_task__mini-aio", "routing", "k_sweep", "worst_images", "runs"):
        if (out / "tables" / f"{table}.md").exists():
            assert f'data-table="{table}"' in dom

    broken = out / "broken.html"
    broken.write_text(
        (out / "report.html")
        .read_text()
        .replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1)
    )
    assert (
        re.findall(r'<img [^>]*data-loaded="(yes|no)"', browser_dom(broken, tmp_path / "chromium"))[0] == "no"
    )


def test_a_bad_format_is_a_one_line_error(tmp_path):
    result = cli(
        "report", "--format", "md,pdf", "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: --format md,pdf: use a comma list of md, html, tex, csv"
