"""Reading finished runs back from a real MLflow store."""

import pytest

from demoe.report.collect import ReportError, Selection, collect


def test_collect_finds_each_evaluation_with_its_modes_and_the_finetuning(collection):
    assert [run.key for run in collection.evals] == [
        "DeMoE-tiny@mini-aio",
        "DeMoE-tiny@plain",
        "DeMoE-tiny-k1@mini-aio",
    ]
    modes = {run.key: run.ordered_modes() for run in collection.evals}
    assert modes["DeMoE-tiny@mini-aio"] == ["identity", "auto", "oracle", "low_light"]
    assert modes["DeMoE-tiny@plain"] == ["identity", "auto"]
    assert [f.name for f in collection.finetunes] == ["tiny-ft"]
    assert "val/psnr" in collection.finetunes[0].curves and "train/loss" in collection.finetunes[0].curves


def test_unknown_experiment_and_model_are_one_sentence_errors(store, tmp_path):
    with pytest.raises(ReportError, match="--experiment nope: no such experiment .*report-tests"):
        collect(Selection(experiment="nope"), tmp_path, store.uri)
    with pytest.raises(ReportError, match="--models DeMoE-huge: no finished evaluation .* DeMoE-tiny"):
        collect(Selection(experiment=store.experiment, models=["DeMoE-huge"]), tmp_path, store.uri)
