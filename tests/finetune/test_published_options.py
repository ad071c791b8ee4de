"""`demoe-eval finetune -c` on an option file of the published DeMoE scripts: recognised, translated into
demoe-eval options (epochs to steps from the pair count, patch_size to gt_size, the two folders to a folder
benchmark, the task), the translation printed and saved in the run folder, where it runs the same."""

from pathlib import Path

import pytest
import torch
import yaml
from helpers import FIXTURES, PROJECT_ROOT, TINY_A, cli, write_drmi

from demoe.config import ConfigError
from demoe.finetune.options import resolve_config
from demoe.finetune.published import is_published, translate
from demoe.registry.checkpoints import read_checkpoint

PUBLISHED = FIXTURES / "published" / "DRMI_finetune.yml"
# what a CPU test must shrink: the published network (DeMoE-tiny's size instead, from the tiny_a weights),
# 300 epochs, crops larger than the 48x48 images, a batch larger than the pairs, four loader processes
SHRINK = [
    "train.epochs=1",
    "train.patch_size=32",
    "train.batch_size=2",
    "train.num_workers=0",
    "network.width=8",
    "network.middle_blk_num=1",
    "network.enc_blk_nums=[1,1]",
    "network.dec_blk_nums=[1,1]",
    "network.k_used=2",
]


def published_doc() -> dict:
    return yaml.safe_load(PUBLISHED.read_text(encoding="utf-8"))


def test_the_published_example_translates_into_demoe_eval_options(tmp_path, monkeypatch):
    monkeypatch.chdir(write_drmi(tmp_path / "data", train=16, test=2).parent)
    translation = translate(published_doc(), source="DRMI_finetune.yml")
    assert translation.options == {
        "name": "DRMI_finetune",
        "model": "DeMoE",
        "pretrained": True,
        "datasets": {
            "train": {
                "bench": "data/DRMI_dataset/train",
                "split": "all",
                "task": "defocus",
                "batch_size": 8,
                "gt_size": 256,
                "num_worker": 4,
                "augment": True,
            },
            "val": {"bench": "data/DRMI_dataset/test", "split": "all", "task": "defocus"},
        },
        "train": {
            "total_iter": 600,  # 300 epochs of 16 pairs // batch 8
            "routing": "oracle",
            "router_loss_weight": 0.0,
            "lr": 1.0e-4,
            "eta_min": 1.0e-7,
            "amp": "auto",
        },
        "logger": {"save_checkpoint_freq": 20},  # every 10 epochs
        "val": {"val_freq": 10, "routing": ["oracle", "auto"]},  # every 5 epochs
    }
    assert (
        translation.lines[0]
        == "DRMI_finetune.yml is a published DeMoE option file; read as demoe-eval options:"
    )
    assert len(translation.lines) <= 7
    cfg = resolve_config(translation.options, source="translated")
    assert cfg["model"] == "DeMoE" and cfg["datasets"]["train"]["gt_size"] == 256


def test_set_takes_published_keys_before_the_translation_and_demoe_eval_keys_after(tmp_path, monkeypatch):
    monkeypatch.chdir(write_drmi(tmp_path / "data", train=16, test=2).parent)
    translation = translate(
        published_doc(), ["train.epochs=2", "train.batch_size=4", "network.k_used=2", "logger.print_freq=1"]
    )
    assert translation.options["train"]["total_iter"] == 8 and translation.options["k"] == 2
    assert translation.overrides == ["logger.print_freq=1"]
    assert translation.equivalent()["logger"] == {"save_checkpoint_freq": 40, "print_freq": 1}
    assert "data/DRMI_dataset" in str(translation.options) and "network_g" not in translation.options


def test_no_demoe_eval_experiment_reads_as_a_published_file():
    for path in sorted((PROJECT_ROOT / "experiments").glob("*.yaml")):
        assert not is_published(yaml.safe_load(path.read_text(encoding="utf-8"))), path.name
    assert is_published(published_doc())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train": {"epochs": 1, "warmup": 3}}, "unknown options: train.warmup"),
        ({"network": {"name": "Restormer"}}, "network.name 'Restormer'"),
        ({"datasets": {"train": {"meta_dir": "data/DRMI_dataset/train/meta"}}}, "needs meta_dir and gt_dir"),
        (
            {"datasets": {"train": {"meta_dir": "data/DRMI_dataset/train/meta", "gt_dir": "data/elsewhere"}}},
            "gt_dir data/elsewhere: no such folder",
        ),
        (
            {
                "datasets": {
                    "train": {
                        "meta_dir": "data/DRMI_dataset/train/meta",
                        "gt_dir": "data/DRMI_dataset/test/ground_truth",
                    }
                }
            },
            "must be two folders side by side",
        ),
        ({"train": {"batch_size": 64}}, "train.batch_size 64 is more than the 16 training pairs"),
        ({"train": {"task": "haze"}}, "train.task 'haze'"),
        ({"train": {"epochs": 0}}, "train.epochs must be a whole number of epochs >= 1"),
    ],
)
def test_a_published_file_that_cannot_be_translated_is_a_one_line_error(
    tmp_path, monkeypatch, change, message
):
    monkeypatch.chdir(write_drmi(tmp_path / "data", train=16).parent)
    doc = published_doc()
    for section, values in change.items():
        doc[section] = values if section == "datasets" else {**doc[section], **values}
    with pytest.raises(ConfigError) as info:
        translate(doc, source="mine.yml")
    assert (
        str(info.value).startswith("mine.yml: ")
        and message in str(info.value)
        and "\n" not in str(info.value)
    )


@pytest.mark.slow
def test_the_published_example_finetunes_as_shipped_and_its_saved_translation_runs_the_same(tmp_path):
    write_drmi(tmp_path / "data", train=4, test=2)  # ./data/DRMI_dataset, as the file's paths say
    args = ["--checkpoint", str(TINY_A), "--no-tracking", *[a for s in SHRINK for a in ("--set", s)]]
    first = cli("finetune", "-c", str(PUBLISHED), *args, "--set", "logger.print_freq=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert f"{PUBLISHED} is a published DeMoE option file; read as demoe-eval options:" in out
    assert "datasets.train meta_dir + gt_dir -> bench data/DRMI_dataset/train (4 pairs)" in out
    assert "train.epochs 1 x 2 steps (4 pairs // batch 2) -> train.total_iter 2" in out
    assert "train.task defocus -> pairs labelled defocus" in out
    run_dir = tmp_path / "runs" / "DRMI_finetune"
    assert f"saved as {Path('runs/DRMI_finetune/options.yaml')}" in out
    assert (run_dir / "published_options.yml").read_bytes() == PUBLISHED.read_bytes()
    saved = yaml.safe_load((run_dir / "options.yaml").read_text())
    assert saved["network_g"]["width"] == 8 and saved["logger"]["print_freq"] == 1
    resolved = resolve_config(saved, checkpoint=TINY_A, source="options.yaml")
    assert resolved == yaml.safe_load((run_dir / "config.yaml").read_text())
    assert "registered as zoo model 'DRMI_finetune'" in out

    again = cli(
        "finetune",
        "-c",
        str(run_dir / "options.yaml"),
        "--checkpoint",
        str(TINY_A),
        "--no-tracking",
        "--out",
        str(tmp_path / "again"),
        cwd=tmp_path,
        env_extra={"DEMOE_HOME": str(tmp_path / "home2")},
    )
    assert again.returncode == 0, again.stderr
    assert "published DeMoE option file" not in again.stdout
    first_weights = read_checkpoint(run_dir / "models" / "best.pt")["params"]
    again_weights = read_checkpoint(tmp_path / "again" / "models" / "best.pt")["params"]
    assert all(torch.equal(first_weights[k], again_weights[k]) for k in first_weights)
