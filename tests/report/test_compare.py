"""`demoe-eval report --compare A B`: two models or two runs, image by image, by the CLI in a subprocess."""

import numpy as np
import pandas as pd
import pytest
from helpers import cli
from mlflow import MlflowClient
from scipy import stats

from .conftest import SWEEP_EXPERIMENT


def parent_ids(store, experiment: str, bench: str) -> list[str]:
    """Evaluation parent runs of ``bench`` in ``experiment``, oldest first."""
    client = MlflowClient(store.uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], f"tags.`demoe.bench` = '{bench}'")
    runs = [r for r in runs if "demoe.routing" not in r.data.tags]
    return [r.info.run_id for r in sorted(runs, key=lambda r: r.info.start_time)]


def row_of(stdout: str, bench: str, mode: str, metric: str) -> list[str]:
    line = next(
        x for x in stdout.splitlines() if x.startswith(f"| {bench}/") and f" | {mode} | {metric} |" in x
    )  # the benchmark column is BENCH/SPLIT: runs pair only on the same split
    return [c.strip() for c in line.strip("|").split("|")]


def paired_psnr(a: pd.DataFrame, b: pd.DataFrame, mode: str) -> np.ndarray:
    left = a[a["mode"] == mode].set_index("name")["psnr"]
    right = b[b["mode"] == mode].set_index("name")["psnr"]
    return (left - right.reindex(left.index)).dropna().to_numpy()


@pytest.mark.slow
def test_two_models_compared_image_by_image(store, tmp_path):
    result = cli(
        "report",
        "--compare",
        "DeMoE-tiny",
        "DeMoE-tiny-k1",
        "--experiment",
        store.experiment,
        "--tracking-uri",
        store.uri,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    a = pd.read_parquet(store.labelled / "per_image.parquet")
    b = pd.read_parquet(store.labelled_k1 / "per_image.parquet")
    differences = paired_psnr(a, b, "auto")
    assert differences.any(), "k changes what auto routing mixes"
    cells = row_of(result.stdout, "mini-aio", "auto", "PSNR (dB)")
    boot = stats.bootstrap(
        (differences,),
        np.mean,
        n_resamples=10000,
        method="percentile",
        batch=1000,
        rng=np.random.default_rng(0),
    ).confidence_interval
    assert cells[3] == str(len(differences)) == "10"
    assert cells[6] == f"{differences.mean():+.2f} [{boot.low:+.2f}, {boot.high:+.2f}]"
    assert cells[7] == f"{stats.wilcoxon(differences).pvalue:.2g}"
    oracle = row_of(result.stdout, "mini-aio", "oracle", "PSNR (dB)")
    assert not paired_psnr(a, b, "oracle").any() and oracle[7] == "n/a", "one forced expert whatever k is"
    assert "n/a: every paired difference is zero." in result.stdout
    assert "| plain |" not in result.stdout, "DeMoE-tiny-k1 was not evaluated on plain"
    assert not (tmp_path / "reports").exists(), "--compare prints; it writes no report"


@pytest.mark.slow
def test_two_runs_of_one_model_and_runs_without_a_common_benchmark(store, tmp_path):
    first, second = parent_ids(store, SWEEP_EXPERIMENT, "mini-aio")[:2]
    same = cli("report", "--compare", first, second, "--tracking-uri", store.uri, cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    assert row_of(same.stdout, "mini-aio", "auto", "PSNR (dB)")[6:] == ["+0.00 [+0.00, +0.00]", "n/a"]
    assert f"A = DeMoE-tiny (run {first[:8]})" in same.stdout

    [plain] = parent_ids(store, store.experiment, "plain")
    apart = cli("report", "--compare", second, plain, "--tracking-uri", store.uri, cwd=tmp_path)
    assert apart.returncode == 1 and "Traceback" not in apart.stderr
    assert apart.stderr.strip() == (
        f"Error: --compare {second} {plain}: no benchmark evaluated by both ({second}: mini-aio/test; {plain}: plain/all)"
    )
    unknown = cli(
        "report",
        "--compare",
        "DeMoE-tiny",
        "DeMoE-huge",
        "--experiment",
        store.experiment,
        "--tracking-uri",
        store.uri,
        cwd=tmp_path,
    )
    assert unknown.returncode == 1
    assert unknown.stderr.strip().startswith("Error: --compare DeMoE-huge: no finished evaluation")
    assert "DeMoE-tiny, DeMoE-tiny-k1" in unknown.stderr


@pytest.mark.parametrize("extra", [["--runs", "x"], ["--models", "DeMoE-tiny"]])
def test_compare_names_its_own_runs(tmp_path, extra):
    result = cli("report", "--compare", "a", "b", *extra, "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2 and "drop --runs and --models" in result.stderr
