"""Real runs to report on, made once per test session: the evaluator on real PNG pairs, logged to a real
MLflow store, plus a real finetuning run with validation."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from demoe.vocab import TASKS

FIXTURES = Path(__file__).parent.parent / "fixtures"
EXPERIMENT = "report-tests"
SWEEP_EXPERIMENT = "report-sweep"
SWEEP = {"name": "mini-k", "models": ["DeMoE-tiny"], "benches": ["mini-aio"], "k": [None, 1]}


def _scene(rng, h: int, w: int) -> Image.Image:
    coarse = rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((w, h), Image.BICUBIC)


def _degrade(sharp: Image.Image, task: str) -> Image.Image:
    if task == "low_light":
        return Image.fromarray((np.asarray(sharp) * 0.3).astype(np.uint8))
    return sharp.filter(ImageFilter.GaussianBlur(1.0 if task == "local_motion" else 1.5))


def make_task_bench(root: Path, per_task: int = 2, side: int = 32) -> Path:
    """``{train,test}/<task>/{blur,sharp}/NN.png`` for every task: task-named folders carry their label."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for task in TASKS:
            for sub in ("blur", "sharp"):
                (root / split / task / sub).mkdir(parents=True, exist_ok=True)
            for i in range(per_task):
                sharp = _scene(rng, side, side)
                sharp.save(root / split / task / "sharp" / f"{i:02d}.png")
                _degrade(sharp, task).save(root / split / task / "blur" / f"{i:02d}.png")
    return root


def make_plain_bench(root: Path, count: int = 3) -> Path:
    """``blur/`` and ``sharp/`` without task labels."""
    rng = np.random.default_rng(1)
    for sub in ("blur", "sharp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        sharp = _scene(rng, 32, 40)
        sharp.save(root / "sharp" / f"p{i}.png")
        _degrade(sharp, "defocus").save(root / "blur" / f"p{i}.png")
    return root


@dataclass
class Store:
    uri: str
    experiment: str
    root: Path
    labelled: Path  # results folder of DeMoE-tiny on mini-aio (auto, oracle, low_light; images saved)
    labelled_k1: Path  # the same with k=1 (auto, oracle; no images saved)
    plain: Path  # results folder of DeMoE-tiny on plain (auto only, no labels)
    weights_dir: Path  # empty: LPIPS is requested but cannot run
    sweep_id: str = ""  # in SWEEP_EXPERIMENT: plain, then mini-aio twice (the first one outside the sweep)


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Store:
    from demoe.finetune.loop import finetune
    from demoe.finetune.options import RunOptions, resolve_config
    from demoe.jobs import evaluate
    from demoe.tracking.mlflow_runs import log_results, start_sweep

    root = tmp_path_factory.mktemp("report_runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEMOE_HOME", str(root / "home"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        labelled_bench = make_task_bench(root / "mini-aio")
        plain_bench = make_plain_bench(root / "plain")
        weights = root / "no-weights"
        weights.mkdir()
        uri = f"sqlite:///{root / 'mlflow.db'}"
        folders = []
        for bench, k, routing, save in (
            (labelled_bench, None, ["auto", "oracle", "low_light"], 10),
            (labelled_bench, 1, ["auto", "oracle"], 0),
            (plain_bench, None, ["auto"], 0),
        ):
            out = root / "results" / f"{bench.name}-k{k}"
            evaluate.evaluate(
                evaluate.EvalConfig(
                    model="DeMoE-tiny",
                    checkpoint=str(FIXTURES / "tiny_a.pt"),
                    bench=str(bench),
                    k=k,
                    routing=routing,
                    metrics=["psnr", "ssimc", "lpips"],
                    workers=0,
                    out=out,
                    save_images=save,
                    weights_dir=weights,
                )
            )
            log_results(out, uri, EXPERIMENT)
            folders.append(out)
        cfg = resolve_config(
            {
                "name": "tiny-ft",
                "model": "DeMoE-tiny",
                "pretrained": False,
                "datasets": {
                    "train": {"bench": str(labelled_bench), "gt_size": 32, "batch_size": 4},
                    "val": {"bench": str(labelled_bench), "split": "test"},
                },
                "train": {"total_iter": 4, "lr": 2e-3, "warmup_iter": 1},
                "val": {"val_freq": 2, "metrics": ["psnr"], "routing": ["auto", "oracle"]},
                "logger": {"print_freq": 1, "save_checkpoint_freq": 2, "experiment": EXPERIMENT},
            }
        )
        finetune(
            cfg,
            RunOptions(run_dir=root / "ft", tracking_uri=uri, experiment=EXPERIMENT, zoo_dir=root / "zoo"),
        )
        labelled, labelled_k1, plain = folders
        log_results(plain, uri, SWEEP_EXPERIMENT)
        log_results(labelled, uri, SWEEP_EXPERIMENT)
        sweep_id = start_sweep(SWEEP["name"], SWEEP, uri, SWEEP_EXPERIMENT)
        for folder in (labelled, labelled_k1):
            log_results(folder, uri, SWEEP_EXPERIMENT, parent_run_id=sweep_id)
    return Store(uri, EXPERIMENT, root, labelled, labelled_k1, plain, weights, sweep_id)


@pytest.fixture(scope="module")
def collection(store, tmp_path_factory):
    """The store's default experiment as the report reads it, with model costs from the zoo."""
    from demoe.report.collect import Selection, add_costs, collect

    runs = collect(Selection(experiment=store.experiment), tmp_path_factory.mktemp("downloads"), store.uri)
    add_costs(runs)
    return runs
