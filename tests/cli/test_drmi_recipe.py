"""experiments/drmi_finetune.yaml works as written: the commands of its header, shrunk to a CPU and a
DRMI-shaped folder, run one after the other, and the report puts the paper's rows beside ours."""

import json
import re
import shlex

import pandas as pd
import pytest
from helpers import PROJECT_ROOT, TINY_A, cli, write_drmi
from mlflow import MlflowClient

RECIPE = PROJECT_ROOT / "experiments" / "drmi_finetune.yaml"
# the published DeMoE does not train on two CPU cores: DeMoE-tiny from the tiny_a weights instead, two steps
FINETUNE_SHRINK = [
    *("--model", "DeMoE-tiny", "--checkpoint", str(TINY_A)),
    *("--set", "train.total_iter=2", "--set", "train.warmup_iter=0", "--set", "datasets.train.gt_size=32"),
    *(
        "--set",
        "datasets.train.batch_size=2",
        "--set",
        "datasets.train.num_worker=0",
        "--set",
        "val.val_freq=1",
    ),
]


def header_commands() -> list[list[str]]:
    """The demoe-eval command lines of the recipe's header comment, without their comments."""
    commands = []
    for line in RECIPE.read_text(encoding="utf-8").splitlines():
        text = line.lstrip("#").strip()
        if line.startswith("#") and text.startswith("demoe-eval "):
            commands.append(shlex.split(re.split(r"\s{2,}\(", text)[0])[1:])
    return commands


@pytest.mark.slow
def test_the_drmi_recipe_runs_as_written_and_the_report_shows_the_papers_rows(tmp_path):
    commands = header_commands()
    assert [c[0] for c in commands] == ["bench", "zoo", "finetune", "finetune", "run"]
    show, fetch, finetune, _multi_gpu, run = commands
    assert fetch == ["zoo", "fetch", "DeMoE"], "offline: replaced by DeMoE-tiny and its weights below"
    assert show == ["bench", "show", "DRMI"] and finetune == [
        "finetune",
        "-c",
        "experiments/drmi_finetune.yaml",
    ]
    assert run == "run --model DeMoE-DRMI --bench DRMI --task defocus --routing oracle,auto".split()
    data_root = write_drmi(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    where = ["--data-root", str(data_root)]

    shown = cli(*show, *where, cwd=tmp_path)
    assert shown.returncode == 0 and "figshare.24634740" in shown.stdout, shown.stderr

    trained = cli(*finetune, *FINETUNE_SHRINK, *where, "--tracking-uri", uri, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "try it: demoe-eval run --model DeMoE-DRMI" in trained.stdout

    scored = cli(
        *run, *where, "--metrics", "psnr,ssimc", "--tracking-uri", uri, "--out", "results", cwd=tmp_path
    )
    assert scored.returncode == 0, scored.stderr
    assert "note: every pair labelled defocus for this run (--task)" in scored.stderr
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["config"]["task"] == "defocus" and results["routing_modes"] == [
        "identity",
        "oracle",
        "auto",
    ]
    assert results["results"]["oracle"]["images"] == 2
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("demoe-eval")
    evals = client.search_runs([experiment.experiment_id], "tags.`demoe.kind` = 'eval'")
    parent = next(r for r in evals if "demoe.routing" not in r.data.tags)
    assert (
        parent.data.params["config.task"] == "defocus"
        and parent.data.tags["demoe.assigned_task"] == "defocus"
    )

    reported = cli("report", "--tracking-uri", uri, "--format", "csv,tex", "--out", "report", cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr
    main = pd.read_csv(tmp_path / "report" / "tables" / "main.csv", keep_default_na=False)
    published = main[main["routing"] == "as published"]
    assert list(published["model"])[0] == "Metalens (paper)" and len(published) == 6
    assert float(published.iloc[0]["DRMI/psnr"]) == 14.722
    assert {"identity", "oracle", "auto"} <= set(main["routing"])
    tex = (tmp_path / "report" / "tables" / "main.tex").read_text()
    # blurred copies of smooth scenes are far easier than metalens photos: the report says the rows differ
    assert "the blurred input scores" in tex and "published Metalens row" in tex
