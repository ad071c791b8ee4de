"""What MLflow holds after logging, read back with MLflow's own client."""

import numpy as np
import pytest
from helpers import tiny_eval_config, write_pairs
from mlflow import MlflowClient

from demoe.jobs.evaluate import evaluate
from demoe.tracking.mlflow_runs import log_results


@pytest.fixture
def results_folder(tmp_path):
    rng = np.random.default_rng(0)
    write_pairs(tmp_path / "bench" / "defocus", 2, rng)
    cfg = tiny_eval_config(tmp_path, str(tmp_path / "bench"), routing=["auto", "oracle"])
    evaluate(cfg)
    return cfg.out


def parents(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "tags.`demoe.kind` = 'eval'")
    return [r for r in runs if "demoe.routing" not in r.data.tags]


def test_evaluations_go_to_the_demoe_eval_experiment_not_default(results_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_results(results_folder, uri)
    client = MlflowClient(uri)
    assert len(parents(client, "demoe-eval")) == 1
    default = client.get_experiment_by_name("Default")
    assert default is None or not client.search_runs([default.experiment_id])


def test_logging_the_same_results_folder_twice_makes_one_run(results_folder, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = log_results(results_folder, uri, "twice")
    second = log_results(results_folder, uri, "twice")
    client = MlflowClient(uri)
    assert first == second and [r.info.run_id for r in parents(client, "twice")] == [first]
    children = client.search_runs(
        [client.get_experiment_by_name("twice").experiment_id], f"tags.mlflow.parentRunId = '{first}'"
    )
    assert sorted(r.data.tags["demoe.routing"] for r in children) == ["auto", "identity", "oracle"]


def test_the_parent_run_shows_every_modes_headline_metrics(results_folder, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_results(results_folder, uri, "headline")
    client = MlflowClient(uri)
    parent = client.get_run(run_id).data.metrics
    children = client.search_runs(
        [client.get_experiment_by_name("headline").experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"
    )
    by_mode = {c.data.tags["demoe.routing"]: c.data.metrics for c in children}
    assert {"auto/psnr", "oracle/psnr", "identity/psnr", "auto/routing_accuracy"} <= set(parent)
    for mode, metrics in by_mode.items():
        assert parent[f"{mode}/psnr"] == metrics["psnr"]
    assert parent["auto/routing_accuracy"] == by_mode["auto"]["routing_accuracy"]


def test_the_benchmark_is_the_runs_dataset_input_with_its_fingerprint_as_digest(results_folder, tmp_path):
    from demoe.tracking.results import read_results

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = MlflowClient(uri).get_run(log_results(results_folder, uri, "inputs"))
    result = read_results(results_folder)
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == f"{result.bench}/{result.split}"
    assert dataset_input.dataset.digest == result.bench_info.fingerprint
    assert [t.value for t in dataset_input.tags if t.key == "mlflow.data.context"] == [result.split]


def test_the_source_commit_is_demoe_evals_own(results_folder, tmp_path, monkeypatch):
    """A run records demoe-eval's commit (from its checkout) or version, never the commit of the
    repository the user happens to work in."""
    import subprocess

    elsewhere = tmp_path / "someone-elses-repo"
    elsewhere.mkdir()
    subprocess.run(["git", "init", "-q", str(elsewhere)], check=True)
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tags = MlflowClient(uri).get_run(log_results(results_folder, uri, "source")).data.tags
    from demoe.tracking.results import read_results, source_commit

    installed = read_results(results_folder).versions
    expected = source_commit() or f"demoe-eval {installed['demoe-eval']}"
    assert tags["mlflow.source.git.commit"] == expected and tags["mlflow.source.name"] == "demoe-eval"


def test_intervals_and_paired_comparisons_read_back_from_mlflow(results_folder, tmp_path):
    """Child runs: METRIC_ci_low/METRIC_ci_high; parent: A_vs_B/METRIC_diff (its interval, Wilcoxon p,
    paired images) and the statistics' settings as stats.* params; all as results.json has them."""
    from demoe.tracking.results import read_results

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_results(results_folder, uri, "intervals")
    client = MlflowClient(uri)
    parent = client.get_run(run_id).data
    children = client.search_runs(
        [client.get_experiment_by_name("intervals").experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"
    )
    result = read_results(results_folder)
    for child in children:
        summary = result.results[child.data.tags["demoe.routing"]]
        interval = summary.intervals["psnr"]
        assert child.data.metrics["psnr_ci_low"] == interval.low
        assert child.data.metrics["psnr_ci_high"] == interval.high
        assert interval.low <= child.data.metrics["psnr"] <= interval.high
    compared = {(c.a, c.b): c for c in result.comparisons if c.metric == "psnr"}
    assert set(compared) == {("auto", "oracle"), ("auto", "identity"), ("oracle", "identity")}
    gain = compared[("auto", "identity")]
    assert gain.images == 2 and gain.p_wilcoxon is not None
    assert parent.metrics["auto_vs_identity/psnr_diff"] == gain.mean_diff
    assert parent.metrics["auto_vs_identity/psnr_diff_ci_low"] == gain.interval.low
    assert parent.metrics["auto_vs_identity/psnr_diff_ci_high"] == gain.interval.high
    assert parent.metrics["auto_vs_identity/psnr_p_wilcoxon"] == gain.p_wilcoxon
    assert parent.metrics["auto_vs_identity/psnr_images"] == 2
    assert parent.metrics["auto_vs_oracle/psnr_images"] == 2
    assert ("auto_vs_oracle/psnr_p_wilcoxon" in parent.metrics) == (
        compared[("auto", "oracle")].p_wilcoxon is not None
    )
    assert parent.metrics["auto/psnr_ci_low"] == result.results["auto"].intervals["psnr"].low
    assert {k: v for k, v in parent.params.items() if k.startswith("stats.")} == {
        "stats.confidence": "0.95",
        "stats.resamples": "10000",
        "stats.method": "percentile",
        "stats.seed": "0",
        "stats.paired_test": "wilcoxon signed-rank, two-sided, zero differences dropped",
    }


def test_a_results_folder_written_before_intervals_keeps_its_digest(results_folder):
    """An older results.json (seconds per image beside each mode's metrics, no intervals) is still
    recognised as logged: its digest is what it was when it was logged."""
    import hashlib
    import json

    from demoe.records import EvalResult
    from demoe.tracking.mlflow_runs import results_digest

    data = json.loads((results_folder / "results.json").read_text())
    for mode, seconds in data["timing"].pop("seconds_per_image").items():
        data["results"][mode]["seconds_per_image"] = seconds
    for summary in data["results"].values():
        summary.pop("intervals", None)
    del data["statistics"], data["comparisons"]
    content = {k: v for k, v in data.items() if k not in ("timing", "versions")}
    logged_then = hashlib.sha256(
        json.dumps({"results": content, "parent": None}, sort_keys=True).encode()
    ).hexdigest()[:32]
    assert results_digest(EvalResult.from_json(data), None) == logged_then
