"""Finetuning: options, losses, schedule, freezing, data order, exact resume, DDP, zoo entry, MLflow."""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageFilter

from demoe.config import ConfigError
from demoe.fileio import sha256_file
from demoe.finetune.data import EpochSampler
from demoe.finetune.loop import finetune
from demoe.finetune.model import apply_freeze, lr_factor, wanted_amp
from demoe.finetune.options import STATE_FILE, RunOptions, TrainError, resolve_config
from demoe.net.losses import charbonnier_loss, fft_loss, pixel_loss, router_ce
from demoe.net.training import MEMORY_FORMATS, leaves_experts_unused, set_train_mode
from demoe.registry import build, zoo
from demoe.registry.checkpoints import read_checkpoint

TASK_PAIR = ("defocus", "low_light")


def make_task_bench(root: Path, per_task: int = 4, side: int = 40) -> Path:
    """Folders ``{train,test}/{defocus,low_light}/{blur,sharp}`` of real PNG pairs: smooth random scenes,
    Gaussian-blurred (defocus) or darkened (low light). Task-named folders carry their task as the label."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for task in TASK_PAIR:
            for sub in ("blur", "sharp"):
                (root / split / task / sub).mkdir(parents=True, exist_ok=True)
            for i in range(per_task):
                coarse = rng.integers(0, 256, size=(side // 8, side // 8, 3), dtype=np.uint8)
                sharp = Image.fromarray(coarse).resize((side, side), Image.BICUBIC)
                if task == "defocus":
                    blurred = sharp.filter(ImageFilter.GaussianBlur(1.5))
                else:
                    blurred = Image.fromarray((np.asarray(sharp) * 0.3).astype(np.uint8))
                sharp.save(root / split / task / "sharp" / f"{i:02d}.png")
                blurred.save(root / split / task / "blur" / f"{i:02d}.png")
    return root


def tiny_config(bench: Path, total: int = 6, val: bool = False, **sections) -> dict:
    doc = {
        "name": "tiny-ft",
        "model": "DeMoE-tiny",
        "pretrained": False,
        "datasets": {"train": {"bench": str(bench), "gt_size": 32, "batch_size": 4}},
        "train": {"total_iter": total, "lr": 2e-3, "warmup_iter": 2},
        "logger": {"print_freq": 1, "save_checkpoint_freq": 2},
    }
    if val:
        doc["datasets"]["val"] = {"bench": str(bench), "split": "test"}
        doc["val"] = {"val_freq": 3, "metrics": ["psnr"], "routing": ["auto"]}
    for section, values in sections.items():
        doc[section] = {**doc.get(section, {}), **values}
    return doc


def params_of(path: Path) -> dict:
    return read_checkpoint(path)["params"]


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, first {different[:3]}"


def log_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- options


def test_config_layers_file_then_set_then_cli_options(tmp_path):
    doc = tiny_config(tmp_path, train={"lr": "1e-3"})
    cfg = resolve_config(
        doc, ["train.lr=1e-4", "datasets.train.gt_size=64"], model="DeMoE-small", checkpoint="w.pt"
    )
    assert cfg["train"]["lr"] == pytest.approx(1e-4)
    assert cfg["datasets"]["train"]["gt_size"] == 64
    assert cfg["model"] == "DeMoE-small" and cfg["path"]["pretrain_network_g"] == "w.pt"
    assert cfg["train"]["betas"] == [0.9, 0.9] and cfg["val"]["metrics"][0] == "psnr"
    assert resolve_config(tiny_config(tmp_path, train={"lr": "1e-3"}))["train"]["lr"] == 1e-3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["train.lrr=1"], "unknown option train.lrr"),
        (["train.lr=fast"], "train.lr must be a number"),
        (["train.routing=manual"], "train.routing must be auto, oracle or a task"),
        (["train.memory_format=nhwc"], "train.memory_format must be one of channels_last, contiguous"),
        (["datasets.train.synthesize=true"], "datasets.train.synthesize degrades aio-synth's train photos"),
        (["network_g.type=DeMoE"], "not both"),
        (["train.freeze.all_but_experts=[blurry]"], "unknown task 'blurry'"),
        (["datasets.val.holdout=1.5"], "datasets.val.holdout must be a fraction between 0 and 1"),
        (["datasets.val.holdout=0.2", "datasets.val.bench=x"], "either a bench to validate on or a holdout"),
    ],
)
def test_config_mistakes_name_the_option(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(tiny_config(tmp_path), change, source="exp.yaml")


def test_lr_warms_up_linearly_then_follows_a_cosine_to_the_floor():
    factors = [lr_factor(s, total=12, warmup=2, floor=0.01) for s in range(13)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0) and factors[12] == pytest.approx(0.01)
    assert factors[7] == pytest.approx(0.01 + 0.99 * 0.5)
    assert all(a >= b for a, b in zip(factors[1:], factors[2:], strict=False))


# ----------------------------------------------------------------------------- losses, freezing, data order


def test_losses():
    sharp = torch.rand(2, 3, 16, 16)
    restored = sharp + 0.5
    assert pixel_loss(restored, sharp, "l1") == pytest.approx(0.5)
    assert charbonnier_loss(restored, sharp) == pytest.approx(0.5, abs=1e-5)
    assert charbonnier_loss(sharp, sharp) == pytest.approx(1e-3)
    assert fft_loss(sharp, sharp) == 0 and fft_loss(restored, sharp) > 0
    logits = torch.tensor([[5.0, 0, 0, 0, 0], [0, 0, 0, 0, 5.0]], requires_grad=True)
    ce_one = router_ce(logits, torch.tensor([0, -1]))
    assert ce_one.item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0])).item()
    )
    none = router_ce(logits, torch.tensor([-1, -1]))
    none.backward()
    assert none.item() == 0 and logits.grad is not None


def test_freeze_all_but_one_expert_trains_only_that_expert_and_fixes_the_router():
    model = build.build_model(zoo.get_entry("DeMoE-tiny"))
    apply_freeze(model, {"encoder": False, "router": False, "all_but_experts": ["low_light"]})
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("experts.") and n.split(".")[3] == "4" for n in trained)
    assert len({n.split(".")[1] for n in trained}) == len(model.experts)
    set_train_mode(model)
    assert model.experts.training and not model.mlp_branch.training


def test_freeze_encoder_keeps_router_and_decoder_trainable():
    model = build.build_model(zoo.get_entry("DeMoE-tiny"))
    assert apply_freeze(model, {"encoder": True, "router": False, "all_but_experts": None}) == ["encoder"]
    assert not any(p.requires_grad for p in model.encoders.parameters())
    assert all(p.requires_grad for p in model.mlp_branch.parameters())


def test_two_ranks_together_see_the_one_rank_batches_and_an_epoch_can_start_part_way():
    data = list(range(13))
    one = EpochSampler(data, num_replicas=1, rank=0, seed=3)
    ranks = [EpochSampler(data, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for sampler in (one, *ranks):
        sampler.set_epoch(2)
    global_batches = [sorted(list(one)[i : i + 4]) for i in range(0, 12, 4)]
    per_rank = [list(s) for s in ranks]
    assert [sorted(per_rank[0][i : i + 2] + per_rank[1][i : i + 2]) for i in (0, 2, 4)] == global_batches
    one.start = 8
    fresh = EpochSampler(data, 1, 0, 3)
    fresh.set_epoch(2)
    assert list(one) == list(fresh)[8:] and len(one) == 5


# ----------------------------------------------------------------------------- the loop, in process


def test_stopped_and_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one(tmp_path):
    bench = make_task_bench(tmp_path / "bench")
    cfg = resolve_config(tiny_config(bench, total=7))
    whole = finetune(cfg, RunOptions(run_dir=tmp_path / "whole", tracking=False))
    first = finetune(cfg, RunOptions(run_dir=tmp_path / "parts", tracking=False, stop_after=3))
    assert first["step"] == 3 and "zoo_entry" not in first
    second = finetune(cfg, RunOptions(run_dir=tmp_path / "parts", tracking=False, resume=True))
    assert whole["step"] == second["step"] == 7
    assert_bitwise_equal(
        params_of(tmp_path / "whole/models/latest.pt"), params_of(tmp_path / "parts/models/latest.pt")
    )
    assert [r["step"] for r in log_lines(tmp_path / "parts")] == list(range(1, 8))
    assert [r["loss"] for r in log_lines(tmp_path / "parts")] == [
        r["loss"] for r in log_lines(tmp_path / "whole")
    ]


def test_a_log_line_torn_by_a_kill_does_not_stop_the_resume(tmp_path):
    bench = make_task_bench(tmp_path / "bench")
    cfg = resolve_config(tiny_config(bench, total=4))
    finetune(cfg, RunOptions(run_dir=tmp_path / "run", tracking=False, stop_after=2))
    with open(tmp_path / "run" / "train_log.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 0.1')
    resumed = finetune(cfg, RunOptions(run_dir=tmp_path / "run", tracking=False, resume=True))
    assert resumed["step"] == 4
    assert [r["step"] for r in log_lines(tmp_path / "run")] == [1, 2, 3, 4]


def test_a_holdout_validates_on_a_seeded_part_of_train_that_training_never_sees(tmp_path, capsys):
    from demoe.data.pairs import resolve
    from demoe.finetune.data import holdout, train_data, val_data
    from demoe.runtime import Dist

    bench = make_task_bench(tmp_path / "bench", per_task=5)
    cfg = resolve_config(tiny_config(bench, val=True))
    cfg["datasets"]["val"] |= {"bench": None, "split": None, "holdout": 0.2}
    opts, cpu = RunOptions(run_dir=tmp_path / "run"), torch.device("cpu")
    train = train_data(cfg, opts, Dist(rank=0, world=1, local_rank=0), cpu)
    val = val_data(cfg, opts, cpu)
    trained, held = {p.name for p in train.pairs}, {n for batch in val.loader for n in batch[2]}
    assert len(held) == val.held_out == 2 and len(trained) == 8 and not trained & held
    assert not val.is_test_split and "WARNING" not in capsys.readouterr().out
    pairs = list(resolve(str(bench), split="train").pairs)

    def held_names(order: list, seed: int) -> set:
        return {p.name for p in holdout(order, 0.2, seed)[1]}

    assert held_names(pairs[::-1], 0) == held_names(pairs, 0) == held  # whatever the order on disk
    assert held_names(pairs, 1) != held


def test_a_run_validating_on_a_holdout_validates_and_registers_its_best_step(tmp_path):
    bench = make_task_bench(tmp_path / "bench", per_task=5)
    doc = tiny_config(bench, total=4, val=True)
    doc["datasets"]["val"] = {"holdout": 0.2}
    doc["val"]["val_freq"] = 2
    result = finetune(resolve_config(doc), RunOptions(run_dir=tmp_path / "run", tracking=False))
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "run" / "validation.jsonl").read_text().splitlines()
    ]
    assert steps == [2, 4] and result["best_psnr"] is not None
    entry = yaml.safe_load(Path(result["zoo_entry"]).read_text())
    assert entry["info"]["validation"]["bench"] == f"{bench} (a held-out 0.2 of train)"


def test_validating_on_the_reported_test_split_warns_and_is_tagged(tmp_path, capsys):
    from demoe.finetune.data import val_data

    bench = make_task_bench(tmp_path / "bench")
    on_test = val_data(resolve_config(tiny_config(bench, val=True)), RunOptions(), torch.device("cpu"))
    assert on_test.is_test_split and "WARNING: validating on bench's test split" in capsys.readouterr().out
    doc = tiny_config(bench, val=True)
    doc["datasets"]["val"]["split"] = "train"
    on_train = val_data(resolve_config(doc), RunOptions(), torch.device("cpu"))
    assert not on_train.is_test_split and "WARNING" not in capsys.readouterr().out


def test_channels_last_training_computes_the_gradients_of_contiguous_training():
    torch.manual_seed(0)
    model = build.build_model(zoo.get_entry("DeMoE-tiny"))
    set_train_mode(model)
    blurred, sharp = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    labels = torch.tensor([0, 4, 1, 4])
    grads = {}
    for layout, memory_format in MEMORY_FORMATS.items():
        model.to(memory_format=memory_format)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the router's dropout
        out = model(blurred.contiguous(memory_format=memory_format), task=labels)
        loss = pixel_loss(out["output"], sharp) + router_ce(out["router_logits"], labels)
        loss.backward()
        grads[layout] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    fast, plain = grads["channels_last"], grads["contiguous"]
    assert fast.keys() == plain.keys() and len(fast) > 50
    for name in plain:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_finetuning_in_channels_last_takes_the_steps_of_one_in_contiguous_memory(tmp_path):
    bench = make_task_bench(tmp_path / "bench")
    losses = {}
    for layout in MEMORY_FORMATS:
        cfg = resolve_config(tiny_config(bench, total=4, train={"memory_format": layout}))
        finetune(cfg, RunOptions(run_dir=tmp_path / layout, tracking=False))
        losses[layout] = [r["loss"] for r in log_lines(tmp_path / layout)]
        kernel = torch.load(tmp_path / layout / STATE_FILE, weights_only=True)["params"]["intro.weight"]
        assert kernel.is_contiguous(memory_format=MEMORY_FORMATS[layout]), layout
    assert len(losses["contiguous"]) == 4
    assert losses["channels_last"] == pytest.approx(losses["contiguous"], rel=1e-4)


@pytest.mark.slow
def test_training_on_freshly_degraded_aio_synth_crops_resumes_bitwise(tmp_path):
    doc = tiny_config(
        "aio-synth", total=4, datasets={"train": {"bench": "aio-synth", "gt_size": 32, "batch_size": 5}}
    )
    doc["datasets"]["train"]["synthesize"] = True
    cfg = resolve_config(doc)
    whole = finetune(cfg, RunOptions(run_dir=tmp_path / "whole", tracking=False))
    finetune(cfg, RunOptions(run_dir=tmp_path / "parts", tracking=False, stop_after=2))
    finetune(cfg, RunOptions(run_dir=tmp_path / "parts", tracking=False, resume=True))
    assert whole["step"] == 4
    assert_bitwise_equal(
        params_of(tmp_path / "whole/models/latest.pt"), params_of(tmp_path / "parts/models/latest.pt")
    )
    assert all(r["router_ce"] > 0 for r in log_lines(tmp_path / "whole"))
    doc["datasets"]["train"]["synthesize"] = False
    finetune(resolve_config(doc), RunOptions(run_dir=tmp_path / "fixed", tracking=False))
    fixed, fresh = log_lines(tmp_path / "fixed"), log_lines(tmp_path / "whole")
    assert [r["pixel"] for r in fixed] != [r["pixel"] for r in fresh]


def test_finished_run_becomes_a_zoo_entry_that_loads(tmp_path):
    bench = make_task_bench(tmp_path / "bench")
    cfg = resolve_config(tiny_config(bench, total=2, logger={"keep_checkpoint_freq": 1}))
    result = finetune(cfg, RunOptions(run_dir=tmp_path / "run", tracking=False, zoo_dir=tmp_path / "zoo"))
    entry = yaml.safe_load(Path(result["zoo_entry"]).read_text())
    weights = tmp_path / "zoo" / entry["checkpoint"]["path"]
    assert (
        entry["checkpoint"]["sha256"] == sha256_file(weights)
        and entry["checkpoint"]["size"] == weights.stat().st_size
    )
    model, loaded, path = build.create_model("tiny-ft", zoo=zoo.load_zoo(zoo.zoo_dirs([tmp_path / "zoo"])))
    assert path == weights.resolve() and loaded.kwargs["width"] == 8
    assert_bitwise_equal(model.state_dict(), params_of(tmp_path / "run/models/best.pt"))
    latest = read_checkpoint(tmp_path / "run/models/latest.pt")
    assert (latest["step"], latest["epoch"]) == (2, 1) and latest["arch"] == "DeMoE"
    assert sorted(p.name for p in (tmp_path / "run/models").glob("step_*.pt")) == [
        "step_0000001.pt",
        "step_0000002.pt",
    ]
    saved = yaml.safe_load((tmp_path / "run/config.yaml").read_text())
    assert saved["train"]["total_iter"] == 2 and saved["datasets"]["train"]["bench"] == str(bench)


def test_a_tracked_run_registers_its_best_checkpoint_as_an_mlflow_model_version_the_zoo_entry_names(tmp_path):
    from mlflow import MlflowClient

    bench = make_task_bench(tmp_path / "bench", per_task=2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = resolve_config(tiny_config(bench, total=1))
    options = RunOptions(run_dir=tmp_path / "run", tracking_uri=uri, zoo_dir=tmp_path / "zoo")
    result = finetune(cfg, options)
    client = MlflowClient(uri)
    version = client.get_model_version("tiny-ft", result["mlflow_model_version"])
    entry = yaml.safe_load(Path(result["zoo_entry"]).read_text())
    assert entry["info"]["mlflow_model"] == f"models:/tiny-ft/{version.version}"
    assert version.run_id == entry["info"]["run_id"]
    assert [v.version for v in client.search_model_versions("name = 'tiny-ft'")] == [version.version]

    cfg = resolve_config(tiny_config(bench, total=1, logger={"register_model": False}))
    unregistered = finetune(
        cfg, RunOptions(run_dir=tmp_path / "run2", tracking_uri=uri, zoo_dir=tmp_path / "z2")
    )
    assert "mlflow_model_version" not in unregistered
    assert len(client.search_model_versions("name = 'tiny-ft'")) == 1


def test_resume_refuses_other_settings_and_a_missing_state(tmp_path):
    bench = make_task_bench(tmp_path / "bench")
    with pytest.raises(TrainError, match="holds no training_state.pt"):
        finetune(resolve_config(tiny_config(bench)), RunOptions(run_dir=tmp_path / "run", resume=True))
    finetune(
        resolve_config(tiny_config(bench, total=2)),
        RunOptions(run_dir=tmp_path / "run", tracking=False, stop_after=1),
    )
    with pytest.raises(TrainError, match=r"other settings \(train.lr\)"):
        finetune(
            resolve_config(tiny_config(bench, total=2), ["train.lr=0.1"]),
            RunOptions(run_dir=tmp_path / "run", tracking=False),
        )


def test_oracle_routing_needs_labels_and_a_model_without_checkpoint_needs_pretrained_false(tmp_path):
    bench = make_task_bench(tmp_path / "bench")
    unlabelled = tmp_path / "flat"
    (unlabelled / "blur").mkdir(parents=True)
    (unlabelled / "sharp").mkdir()
    for sub in ("blur", "sharp"):
        for f in (bench / "train/defocus" / sub).iterdir():
            (unlabelled / sub / f.name).write_bytes(f.read_bytes())
    doc = tiny_config(unlabelled, train={"routing": "oracle"})
    doc["datasets"]["train"]["split"] = None
    with pytest.raises(TrainError, match="oracle needs task labels"):
        finetune(resolve_config(doc), RunOptions(run_dir=tmp_path / "a", tracking=False))
    with pytest.raises(TrainError, match="pretrained: false"):
        finetune(
            resolve_config(tiny_config(bench), ["pretrained=true"]),
            RunOptions(run_dir=tmp_path / "b", tracking=False),
        )


# ----------------------------------------------------------------------------- the command, in subprocesses


def cli(*args, cwd: Path, env_extra=None, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "demoe.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    bench = make_task_bench(tmp_path / "bench")
    # A frozen router runs in eval mode, so its BatchNorm does not see the per-process batch size.
    doc = tiny_config(bench, total=6, train={"freeze": {"router": True}})
    config = write_config(tmp_path / "exp.yaml", doc)
    one = cli("finetune", "-c", str(config), "--no-tracking", "--out", str(tmp_path / "one"), cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    two = cli(
        "finetune",
        "-c",
        str(config),
        "--no-tracking",
        "--out",
        str(tmp_path / "two"),
        "--nproc",
        "2",
        cwd=tmp_path,
    )
    assert two.returncode == 0, two.stderr
    assert "2 process(es) on cpu" in two.stdout
    a, b = log_lines(tmp_path / "one"), log_lines(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 7))
    for key in ("loss", "pixel", "router_ce", "lr"):
        assert [r[key] for r in b] == pytest.approx([r[key] for r in a], rel=1e-4), key
    assert not torch.equal(
        params_of(tmp_path / "one/models/latest.pt")["intro.weight"],
        read_checkpoint_start(doc)["intro.weight"],
    )


def read_checkpoint_start(doc: dict) -> dict:
    torch.manual_seed(doc.get("manual_seed", 0))
    return build.build_model(zoo.get_entry(doc["model"])).state_dict()


@pytest.mark.slow
def test_killed_at_a_random_step_and_resumed_ends_bitwise_equal(tmp_path):
    bench = make_task_bench(tmp_path / "bench")
    doc = tiny_config(bench, total=12, val=True, logger={"save_checkpoint_freq": 1})
    config = write_config(tmp_path / "exp.yaml", doc)
    args = ["finetune", "-c", str(config), "--no-tracking", "--register-dir", str(tmp_path / "zoo")]
    whole = cli(*args, "--out", str(tmp_path / "whole"), cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr

    kill_at = random.Random().randint(2, 9)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "demoe.cli", *args, "--out", str(tmp_path / "cut")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith(f"step {kill_at}/"):
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    resumed = cli(*args, "--out", str(tmp_path / "cut"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    first = next(line for line in resumed.stdout.splitlines() if line.startswith(("resuming", "starting")))
    resumed_at = int(first.split(" at step ")[1].split("/")[0])
    assert first.startswith("resuming") and kill_at - 1 <= resumed_at < 12, (kill_at, first)
    assert_bitwise_equal(
        params_of(tmp_path / "whole/models/latest.pt"), params_of(tmp_path / "cut/models/latest.pt")
    )
    assert [r["step"] for r in log_lines(tmp_path / "cut")] == list(range(1, 13))
    validations = [json.loads(line) for line in (tmp_path / "cut/validation.jsonl").read_text().splitlines()]
    assert [v["step"] for v in validations] == [3, 6, 9, 12]
    assert (
        "val/routing_accuracy" in validations[0]["figures"]
        and "val/identity/psnr" in validations[0]["figures"]
    )
    best = max(validations, key=lambda v: v["figures"]["val/psnr"])
    assert read_checkpoint(tmp_path / "cut/models/best.pt")["step"] == best["step"]
    assert_bitwise_equal(
        params_of(tmp_path / "whole/models/best.pt"), params_of(tmp_path / "cut/models/best.pt")
    )


@pytest.mark.slow
def test_finetune_logs_to_mlflow_and_its_zoo_entry_runs_with_the_validation_figures(tmp_path):
    from mlflow import MlflowClient

    bench = make_task_bench(tmp_path / "bench")
    doc = tiny_config(
        bench,
        total=4,
        val=True,
        logger={"register_model": "tiny-ft", "model_alias": "champion", "experiment": "ft", "print_freq": 1},
    )
    config = write_config(tmp_path / "exp.yaml", doc)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    zoo_dir, run_dir = tmp_path / "zoo", tmp_path / "run"
    result = cli(
        "finetune",
        "-c",
        str(config),
        "--tracking-uri",
        uri,
        "--register-dir",
        str(zoo_dir),
        "--out",
        str(run_dir),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ft")
    runs = client.search_runs([experiment.experiment_id], "tags.`demoe.kind` = 'finetune'")
    assert len(runs) == 1
    run = runs[0]
    run_id = run.info.run_id
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny-ft"
    assert (
        run.data.params["config.train.total_iter"] == "4" and run.data.params["config.model"] == "DeMoE-tiny"
    )
    for key in ("train/loss", "train/router_ce", "lr"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3, 4], key
    val_psnr = {m.step: m.value for m in client.get_metric_history(run_id, "val/psnr")}
    assert sorted(val_psnr) == [3, 4]
    usage = [client.get_metric_history(run_id, f"val/expert_usage/{t}")[-1].value for t in TASK_PAIR]
    assert 0 <= sum(usage) <= 1.0 + 1e-9
    assert {a.path for a in client.list_artifacts(run_id, "best")} == {"best/best.pt"}
    downloaded = client.download_artifacts(run_id, "best/best.pt", str(tmp_path / "dl"))
    assert_bitwise_equal(params_of(Path(downloaded)), params_of(run_dir / "models/best.pt"))
    assert client.get_model_version_by_alias("tiny-ft", "champion").run_id == run_id

    entry = yaml.safe_load((zoo_dir / "tiny-ft.yaml").read_text())
    best_psnr = max(val_psnr.values())
    assert entry["info"]["run_id"] == run_id and entry["info"]["validation"]["val/psnr"] == round(
        best_psnr, 4
    )
    evaluated = cli(
        "run",
        "--model",
        "tiny-ft",
        "--zoo-dir",
        str(zoo_dir),
        "--bench",
        str(bench),
        "--split",
        "test",
        "--routing",
        "auto",
        "--metrics",
        "psnr",
        "--workers",
        "0",
        "--no-tracking",
        "--out",
        str(tmp_path / "eval"),
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    figures = json.loads((tmp_path / "eval/results.json").read_text())["results"]["auto"]["metrics"]
    # run restores in channels-last layout, validation in the training layout: outputs agree to ~1e-6
    assert figures["psnr"] == pytest.approx(best_psnr, abs=1e-4)


def test_ddp_searches_unused_parameters_only_when_routing_can_skip_experts():
    tiny = zoo.get_entry("DeMoE-tiny")
    assert leaves_experts_unused(build.build_model(tiny), "auto")
    assert not leaves_experts_unused(build.build_model(tiny, k=5), "auto")
    assert leaves_experts_unused(build.build_model(tiny, k=5), "oracle")
    assert not leaves_experts_unused(build.build_model(zoo.get_entry("NAFNet-small")), "auto")


def test_mixed_precision_is_off_on_cpu_unless_asked_and_then_trains(tmp_path):
    assert wanted_amp("auto", torch.device("cpu")) is None
    assert wanted_amp("none", torch.device("cpu")) is None
    assert wanted_amp("bf16", torch.device("cpu")) is torch.bfloat16
    bench = make_task_bench(tmp_path / "bench")
    cfg = resolve_config(tiny_config(bench, total=2, train={"amp": "bf16", "grad_clip": 0.1}))
    result = finetune(cfg, RunOptions(run_dir=tmp_path / "run", tracking=False))
    assert result["step"] == 2
    assert all(torch.isfinite(v).all() for v in params_of(tmp_path / "run/models/latest.pt").values())


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.yaml")))
def test_every_experiment_file_resolves_as_a_finetuning_or_a_sweep(path):
    from demoe.jobs.evaluate import EvalConfig
    from demoe.jobs.sweep import expand_sweep

    doc = yaml.safe_load(path.read_text())
    if "datasets" in doc:
        cfg = resolve_config(doc, source=str(path))
        assert cfg["name"] and cfg["datasets"]["train"]["bench"]
    else:
        configs = expand_sweep(doc, EvalConfig(model="unused", bench="unused"), str(path))
        assert len(configs) == len(doc["models"]) * len(doc["benches"]) * len(doc.get("k") or [None])
        assert all(zoo.get_entry(c.model) for c in configs)


def test_shipped_default_model_matches_its_entry_and_restores():
    entry = zoo.get_entry(zoo.DEFAULT_MODEL)
    weights = entry.shipped_checkpoint()
    assert (
        entry.name == "DeMoE-tiny-synth" and entry.checkpoint.path == "weights/DeMoE-tiny-synth.safetensors"
    )
    assert sha256_file(weights) == entry.checkpoint.sha256 and weights.stat().st_size == entry.checkpoint.size
    model, _, path = build.create_model(zoo.DEFAULT_MODEL)
    assert path == weights and sum(p.numel() for p in model.parameters()) == 1_188_265
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 40, 48))
    assert out["output"].shape == (1, 3, 40, 48) and out["router_logits"].shape == (1, 5)


def test_batches_that_never_reach_the_trained_expert_leave_it_as_it_was(tmp_path):
    import shutil

    bench = make_task_bench(tmp_path / "bench")
    for split in ("train", "test"):
        shutil.rmtree(bench / split / "low_light")  # defocus pairs only, routed to the defocus expert
    start = tmp_path / "start.pt"
    shutil.copy(Path(__file__).resolve().parents[1] / "fixtures" / "tiny_a.pt", start)
    doc = tiny_config(
        bench,
        total=3,
        path={"pretrain_network_g": str(start)},
        train={"routing": "oracle", "freeze": {"all_but_experts": ["low_light"]}},
    )
    cfg = resolve_config({**doc, "pretrained": True})
    result = finetune(cfg, RunOptions(run_dir=tmp_path / "run", tracking=False))
    assert result["step"] == 3
    before, after = params_of(start), params_of(tmp_path / "run/models/latest.pt")
    assert_bitwise_equal(before, after)


def test_a_run_stopped_by_an_unreadable_image_is_failed_in_mlflow_not_finished(tmp_path):
    from mlflow import MlflowClient

    bench = make_task_bench(tmp_path / "bench")
    damaged = bench / "train" / "defocus" / "blur" / "01.png"
    damaged.write_bytes(damaged.read_bytes()[:120])  # the header survives, the pixels do not
    config = write_config(tmp_path / "exp.yaml", tiny_config(bench, total=8, logger={"experiment": "ft"}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = cli(
        "finetune", "-c", str(config), "--tracking-uri", uri, "--out", str(tmp_path / "run"), cwd=tmp_path
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "01.png" in result.stderr
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ft").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_the_router_loss_weight_scales_the_router_cross_entropy_in_the_trained_loss(tmp_path):
    bench = make_task_bench(tmp_path / "bench")
    runs = {}
    for weight in (0.0, 5.0):
        doc = tiny_config(bench, total=1, train={"router_loss_weight": weight, "warmup_iter": 0})
        finetune(resolve_config(doc), RunOptions(run_dir=tmp_path / f"w{weight}", tracking=False))
        (logged,) = log_lines(tmp_path / f"w{weight}")
        assert logged["loss"] == pytest.approx(logged["pixel"] + weight * logged["router_ce"], rel=1e-6)
        runs[weight] = params_of(tmp_path / f"w{weight}/models/latest.pt")
    router = [k for k in runs[0.0] if k.startswith("mlp_branch") and k.endswith("weight")]
    assert any(not torch.equal(runs[0.0][k], runs[5.0][k]) for k in router)
