"""Every manifest kind (zoo entry, benchmark manifest, experiment file) is checked the same way: one
line naming the file with all the mistakes of its independent keys, so a user fixes them in one go."""

from pathlib import Path

import pytest

from demoe.config import ConfigError
from demoe.finetune.options import resolve_config
from demoe.registry.benchmarks import BenchmarkError, parse_spec
from demoe.registry.zoo import ZooError, load_zoo


def test_a_zoo_entry_reports_its_keyword_and_checkpoint_mistakes_together(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "name: mine\narch: DeMoE\nkwargs: {width: abc, k_used: 9, depth: 2}\n"
        "checkpoint: {file: ../x.pt, url: 'file:///etc/passwd'}\ninfo: [1]\n"
    )
    with pytest.raises(ZooError) as error:
        load_zoo([tmp_path])
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'mine.yaml'}: ") and "\n" not in message
    for part in ("'depth'", "width 'abc'", "k_used 9", "file '../x.pt'", "url 'file:///etc/passwd'", "info"):
        assert part in message, part


def test_a_benchmark_manifest_reports_its_mistakes_together():
    source = Path("benchmarks/mine.yaml")
    data = {
        "name": "mine",
        "root": "data/mine",
        "splits": {"test": {"pairs": -1}},
        "task": "blurry",
        "paper_protocol": "xyz",
        "unpaired": "maybe",
        "protocol": "rgb",
        "colour": "red",
    }
    with pytest.raises(BenchmarkError) as error:
        parse_spec(data, source)
    message = str(error.value)
    assert message.startswith("benchmarks/mine.yaml: ") and "\n" not in message
    for part in (
        "'colour'",
        "'blurry'",
        "'xyz'",
        "'maybe'",
        "pairs must be a count",
        "protocol takes a mapping",
    ):
        assert part in message, part


def test_an_experiment_file_reports_its_mistakes_together():
    doc = {
        "model": "DeMoE-tiny",
        "datasets": {"train": {"bench": "aio-synth"}, "val": {"holdout": 2}},
        "train": {"total_iter": 0, "lr": -1, "routing": "manual", "pixel_loss": "l3"},
        "val": {"val_freq": 0},
    }
    with pytest.raises(ConfigError) as error:
        resolve_config(doc, source="recipe.yaml")
    message = str(error.value)
    assert message.startswith("recipe.yaml: ") and "\n" not in message
    for part in ("total_iter", "train.lr", "train.routing", "pixel_loss", "holdout", "val_freq"):
        assert part in message, part
