"""``run --param-key`` and ``--cast-weights``: which weights of a checkpoint were evaluated, in results.json
and MLflow's tags, and a float16 checkpoint refused without the flag."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import TINY_A, cli, tiny_eval_config, tiny_run_args, write_pairs

from demoe.jobs.evaluate import evaluate
from demoe.registry.checkpoints import CheckpointError
from demoe.tracking.mlflow_runs import eval_tags
from demoe.tracking.results import ResultsError, read_results


@pytest.mark.slow
def test_run_param_key_evaluates_params_ema_and_records_it(tmp_path):
    bench = tmp_path / "bench"
    write_pairs(bench, 2, np.random.default_rng(0))
    state = torch.load(TINY_A, weights_only=True)["params"]
    ema = {k: (v * 0.5).half() if v.is_floating_point() else v for k, v in state.items()}
    both = tmp_path / "basicsr.pth"
    torch.save({"params": state, "params_ema": ema}, both)

    refused = cli(*tiny_run_args(bench, tmp_path / "refused", "--param-key", "params_ema", checkpoint=both))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert lines[-1].startswith(f"Error: {both}: ") and "--cast-weights" in lines[-1]

    out = tmp_path / "ema"
    done = cli(*tiny_run_args(bench, out, "--param-key", "params_ema", "--cast-weights", checkpoint=both))
    assert done.returncode == 0, done.stderr
    result = read_results(out)
    floats = sum(v.is_floating_point() for v in state.values())
    assert result.model_info.checkpoint_param_key == "params_ema"
    assert result.model_info.weights_cast == {"float16->float32": floats}
    assert result.config["param_key"] == "params_ema" and result.config["cast_weights"] is True
    assert eval_tags(out, result)["demoe.checkpoint_param_key"] == "params_ema"

    # the same weights on their own give the same scores; params (the default) gives others
    only_ema = tmp_path / "ema_only.pt"
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in ema.items()}, only_ema)
    cfg = tiny_eval_config(tmp_path, str(bench), routing=["auto"])
    alone = evaluate(replace(cfg, checkpoint=str(only_ema), out=tmp_path / "alone"))
    default = evaluate(replace(cfg, checkpoint=str(both), out=tmp_path / "default"))
    assert (
        alone.model_info.checkpoint_param_key is None and default.model_info.checkpoint_param_key == "params"
    )
    psnr = {r.summary("auto").metrics["psnr"] for r in (result, alone, default)}
    assert result.summary("auto").metrics["psnr"] == pytest.approx(alone.summary("auto").metrics["psnr"])
    assert len(psnr) == 2

    # a results folder made from params_ema does not take records of another choice
    with pytest.raises(ResultsError, match="checkpoint_param_key"):
        evaluate(replace(cfg, checkpoint=str(both), out=out, param_key="params", cast_weights=True))


def test_finetune_starts_from_the_chosen_entry_of_its_checkpoint(tmp_path):
    from demoe.config import ConfigError
    from demoe.finetune.model import start_model
    from demoe.finetune.options import resolve_config

    state = torch.load(TINY_A, weights_only=True)["params"]
    ema = {k: (v * 0.5).half() if v.is_floating_point() else v for k, v in state.items()}
    both = tmp_path / "basicsr.pth"
    torch.save({"params": state, "params_ema": ema}, both)
    doc = {"model": "DeMoE-tiny", "datasets": {"train": {"bench": "aio-synth"}}}

    cfg = resolve_config(doc, checkpoint=both, param_key="params_ema", cast_weights=True)
    assert cfg["path"]["param_key_g"] == "params_ema" and cfg["path"]["cast_weights_g"] is True
    start = start_model(cfg, [])
    assert torch.equal(start.model.intro.bias, ema["intro.bias"].float())
    assert torch.equal(
        start_model(resolve_config(doc, checkpoint=both), []).model.intro.bias, state["intro.bias"]
    )
    as_file = {**doc, "path": {"pretrain_network_g": str(both), "param_key_g": "params_ema"}}
    with pytest.raises(CheckpointError, match="--cast-weights"):
        start_model(resolve_config(as_file), [])
    with pytest.raises(ConfigError, match="path.cast_weights_g must be true or false"):
        resolve_config({**as_file, "path": {"cast_weights_g": "yes"}})
