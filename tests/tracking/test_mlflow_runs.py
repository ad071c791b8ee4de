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
