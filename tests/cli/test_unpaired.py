"""`demoe-eval run` and `demoe-eval report` on captures without sharp images, end to end: subprocesses on
real PNG files, a local SQLite MLflow store read back with MLflow's own client."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_A, cli, write_pairs
from PIL import Image, ImageFilter

pytestmark = pytest.mark.slow


@dataclass
class Runs:
    root: Path
    uri: str
    run: object  # the CompletedProcess of `run` on the captures
    report: object  # the CompletedProcess of `report` on the experiment
    out: Path  # results folder of the captures
    env: dict


def write_captures(folder: Path) -> None:
    """Three blurred photos in ``folder/blur``, no sharp/: two 48x40, one 32x32."""
    rng = np.random.default_rng(7)
    (folder / "blur").mkdir(parents=True)
    for i, (w, h) in enumerate([(48, 40), (48, 40), (32, 32)]):
        coarse = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        scene = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        scene.filter(ImageFilter.GaussianBlur(1.5)).save(folder / "blur" / f"shot{i}.png")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    root = tmp_path_factory.mktemp("unpaired_e2e")
    write_captures(root / "metalens")
    write_pairs(root / "plain", 2, np.random.default_rng(0))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {"DEMOE_HOME": str(root / "home")}
    common = ["--model", "DeMoE-tiny", "--checkpoint", str(TINY_A), "--workers", "0"]
    common += ["--weights-dir", str(root / "no-weights"), "--tracking-uri", uri, "--experiment", "e2e"]
    run = cli("run", *common, "--bench", "metalens", "--out", "metalens-out", cwd=root, env_extra=env)
    paired = cli(
        "run", *common, "--bench", "plain", "--metrics", "psnr", "--out", "plain-out", cwd=root, env_extra=env
    )
    assert paired.returncode == 0, paired.stderr
    report = cli("report", "--experiment", "e2e", "--tracking-uri", uri, cwd=root, env_extra=env)
    return Runs(root, uri, run, report, root / "metalens-out", env)


def test_run_on_captures_scores_them_without_reference_and_says_so_once(runs):
    assert runs.run.returncode == 0, runs.run.stderr
    notes = [line for line in runs.run.stderr.splitlines() if "no sharp images" in line]
    assert len(notes) == 1 and "PSNR, SSIM, LPIPS) need sharp images" in notes[0]
    assert "(piqe)" in notes[0]
    assert "niqe: not computed: missing" in runs.run.stderr  # its file is absent offline: said, not faked

    result = json.loads((runs.out / "results.json").read_text())
    assert result["bench_info"]["unpaired"] is True and result["bench_info"]["pairs"] == 3
    assert result["config"]["metrics"] == ["niqe", "brisque", "piqe"]
    assert set(result["metrics_unavailable"]) == {"niqe", "brisque"}
    assert "niqe_modelparameters.mat" in result["metrics_unavailable"]["niqe"]
    assert result["routing_modes"] == ["identity", "auto"]
    assert set(result["results"]["identity"]["metrics"]) == {"piqe"}

    table = pd.read_parquet(runs.out / "per_image.parquet")
    auto = table[table["mode"] == "auto"].set_index("name")
    assert sorted(auto.index) == ["shot0", "shot1", "shot2"]
    assert auto["pred_task"].notna().all() and auto["experts"].str.len().gt(0).all()
    probabilities = auto[[c for c in auto.columns if c.startswith("p_")]].sum(axis=1)
    assert np.allclose(probabilities, 1.0, atol=1e-4)
    decisions = result["results"]["auto"]["decisions"]
    assert decisions == auto["pred_task"].value_counts().to_dict()
    assert (
        f"router's choices (auto): {', '.join(f'{t} {n}' for t, n in decisions.items())}" in runs.run.stdout
    )
    strips = sorted(p.name for p in (runs.out / "strips").glob("*.png"))
    assert strips == ["shot0.png", "shot1.png", "shot2.png"]


def test_the_run_is_logged_to_mlflow_as_an_unpaired_evaluation(runs):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=runs.uri)
    experiment = client.get_experiment_by_name("e2e")
    found = client.search_runs([experiment.experiment_id], "tags.`demoe.bench` = 'metalens'")
    parent = next(r for r in found if "demoe.routing" not in r.data.tags)
    children = {r.data.tags["demoe.routing"]: r for r in found if "demoe.routing" in r.data.tags}
    assert parent.data.tags["demoe.unpaired"] == "true" and parent.data.tags["demoe.kind"] == "eval"
    assert sorted(children) == ["auto", "identity"]
    table = pd.read_parquet(runs.out / "per_image.parquet")
    for mode, child in children.items():
        expected = table[table["mode"] == mode]["piqe"].mean()
        assert child.data.metrics["piqe"] == pytest.approx(expected, abs=1e-6)
        assert "psnr" not in child.data.metrics
    routed = {k: v for k, v in children["auto"].data.metrics.items() if k.startswith("routed_")}
    counts = table[table["mode"] == "auto"]["pred_task"].value_counts()
    assert routed == {f"routed_{task}": n for task, n in counts.items()}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.json", "per_image.parquet", "strips", "expert_usage.json"} <= artifacts
    strips = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "strips")}
    assert strips == {"shot0.png", "shot1.png", "shot2.png"}


def test_the_report_shows_the_routers_choices_and_strips_without_psnr_columns_for_it(runs):
    assert runs.report.returncode == 0, runs.report.stderr
    out = runs.root / "reports" / "e2e"
    table = pd.read_parquet(runs.out / "per_image.parquet")
    counts = table[table["mode"] == "auto"]["pred_task"].value_counts().to_dict()
    choices = pd.read_csv(out / "tables" / "routing_decisions.csv")
    assert choices[["model", "bench", "images"]].values.tolist() == [["DeMoE-tiny", "metalens", 3]]
    routed = {c.removeprefix("routed_"): int(choices.loc[0, c]) for c in choices if c.startswith("routed_")}
    assert {task: n for task, n in routed.items() if n} == counts

    quality = (out / "tables" / "unpaired__metalens.md").read_text()
    columns = [c.strip() for c in quality.splitlines()[0].strip("|").split("|")]
    assert columns == ["Model", "Routing", "Images", "PIQE↓", "s/img"]
    main = (out / "tables" / "main.md").read_text()  # the paired run's table: no column for the captures
    assert "metalens" not in main and "PSNR" in main

    page, markdown = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert 'data-table="routing_decisions"' in page and 'data-table="unpaired__metalens"' in page
    assert "The router's choices on images without sharp references" in markdown
    assert "figures/strips__DeMoE-tiny@metalens.png" in markdown
    assert "figures/expert_usage__DeMoE-tiny@metalens.png" in markdown
    assert (out / "figures" / "strips__DeMoE-tiny@metalens.png").is_file()
    assert quality.splitlines()[0] in runs.report.stdout  # printed with the main table
