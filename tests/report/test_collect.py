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


def test_a_run_given_its_models_own_k_is_the_models_default_run():
    from demoe.report.collect import EvalRun, _default_k_as_default, _latest_per_key

    def run(run_id, label, k, start):
        return EvalRun(run_id, label, "M", "aio", "test", k, "sha", "fp", start, {}, [])

    evals = [run("plain", "M", 1, 1), run("sweep1", "M-k1", 1, 2), run("sweep2", "M-k2", 2, 3)]
    kept, left_out = _latest_per_key(_default_k_as_default(evals))
    assert sorted((r.run_id, r.label) for r in kept) == [("sweep1", "M"), ("sweep2", "M-k2")]
    assert left_out == ["plain (M@aio: a later run of the same model and benchmark is shown)"]
    other_checkpoint = [
        run("plain", "M", 1, 1),
        EvalRun("x", "M-k1", "M", "aio", "test", 1, "other", "fp", 2, {}, []),
    ]
    assert [r.label for r in _default_k_as_default(other_checkpoint)] == ["M", "M-k1"]
