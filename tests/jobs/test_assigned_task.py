"""``run --task``: every pair of an unlabelled benchmark labelled with one task for one run, so that oracle
routing forces its experts and auto is scored against it; recorded with the results."""

import json
from dataclasses import replace

import pytest
from helpers import tiny_eval_config, write_drmi

from demoe.jobs.evaluate import evaluate
from demoe.runner.scoring import EvaluationError
from demoe.tracking.results import read_records


def test_task_labels_an_unlabelled_benchmark_for_the_run_and_is_recorded(tmp_path):
    data_root = write_drmi(tmp_path / "data")
    cfg = tiny_eval_config(tmp_path, "DRMI", data_root=data_root, routing=["oracle", "auto"])
    with pytest.raises(EvaluationError, match="no task labels to force"):
        evaluate(cfg)
    result = evaluate(replace(cfg, task="defocus"))
    assert result.routing_modes == ["identity", "oracle", "auto"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["config"]["task"] == "defocus" and saved["bench_info"]["task"] is None
    assert result.summary("auto").routing_accuracy is not None
    records = read_records(tmp_path / "out")
    assert len(records) == 6 and {r.label for r in records} == {"defocus"}


def test_oracle_with_the_task_forces_the_same_experts_as_routing_to_it(tmp_path):
    data_root = write_drmi(tmp_path / "data")
    cfg = tiny_eval_config(
        tmp_path, "DRMI", data_root=data_root, task="low_light", routing=["oracle", "low_light"]
    )
    result = evaluate(cfg)
    assert result.summary("oracle").metrics["psnr"] == pytest.approx(
        result.summary("low_light").metrics["psnr"]
    )


def test_task_on_a_labelled_benchmark_or_an_unknown_task_is_a_one_line_error(tmp_path):
    bench = tmp_path / "defocus"  # a task-named folder labels its pairs
    write_drmi(tmp_path / "d")
    (tmp_path / "d" / "DRMI_dataset" / "test").rename(bench)
    with pytest.raises(EvaluationError) as info:
        evaluate(tiny_eval_config(tmp_path, str(bench), task="low_light"))
    assert "carries its own task labels" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(EvaluationError, match="not a task"):
        evaluate(tiny_eval_config(tmp_path, str(bench), task="haze"))
