"""The report folder: what it holds, what it says is missing, and the same bytes for the same runs."""

import base64
import re

import pytest
import yaml
from PIL import Image

from demoe.report.build import build_report
from demoe.report.collect import ReportError, Selection

from .conftest import SWEEP, SWEEP_EXPERIMENT


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports") / "first"
    return build_report(Selection(experiment=store.experiment), out, tracking_uri=store.uri)


def generated(folder) -> dict:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.slow
def test_a_second_report_of_the_same_runs_is_byte_identical(report, store, tmp_path):
    again = build_report(Selection(experiment=store.experiment), tmp_path / "second", tracking_uri=store.uri)
    first, second = generated(report.out), generated(again.out)
    assert sorted(first) == sorted(second)
    differ = [name for name in first if first[name] != second[name]]
    assert differ == []
    assert {"report.md", "report.html", "tables/main.md", "tables/main.tex", "tables/main.csv"} <= set(first)


def test_tables_of_a_second_report_are_byte_identical(report, store, tmp_path):
    again = build_report(
        Selection(experiment=store.experiment), tmp_path / "again", ["tex", "csv"], store.uri
    )
    first, second = generated(report.out), generated(again.out)
    assert {n for n in second if n.startswith("tables/")} == {
        n for n in first if n.startswith("tables/") and not n.endswith(".md")
    }
    for name, data in second.items():
        if name.startswith("tables/"):
            assert data == first[name], name


def test_an_experiment_without_runs_is_a_one_line_error(store, tmp_path):
    with pytest.raises(ReportError, match="no finished evaluation or finetuning run in experiment 'Default'"):
        build_report(Selection(experiment="Default"), tmp_path / "r", ["csv"], store.uri)


def test_the_folder_holds_every_table_in_every_format_and_each_figure_as_png_and_svg(report):
    names = set(generated(report.out))
    for table in ("main", "routing", "k_sweep", "worst_images", "finetune", "runs", "per_task__mini-aio"):
        assert {f"tables/{table}.md", f"tables/{table}.tex", f"tables/{table}.csv"} <= names
    assert "tables/expert_usage.csv" in names and "tables/expert_usage.md" not in names
    pngs = {n[:-4] for n in names if n.startswith("figures/") and n.endswith(".png")}
    assert pngs == {n[:-4] for n in names if n.startswith("figures/") and n.endswith(".svg")}
    assert {
        "figures/confusion__DeMoE-tiny@mini-aio",
        "figures/expert_usage__DeMoE-tiny@mini-aio",
        "figures/psnr_per_image__DeMoE-tiny@plain",
        "figures/images__DeMoE-tiny@mini-aio",
        "figures/k_sweep",
    } <= pngs
    assert any(p.startswith("figures/curves__tiny-ft") for p in pngs)
    assert not any("images__DeMoE-tiny-k1" in p or "images__DeMoE-tiny@plain" in p for p in pngs)
    assert "figures/confusion__DeMoE-tiny-k1@mini-aio" not in pngs, "one checkpoint has one router"
    assert (
        "Router confusion of DeMoE-tiny, DeMoE-tiny-k1 on mini-aio" in (report.out / "report.md").read_text()
    )
    for name in pngs:
        with Image.open(report.out / f"{name}.png") as image:
            assert image.width > 200 and image.height > 150


def test_markdown_links_every_figure_and_says_what_is_missing(report):
    text = (report.out / "report.md").read_text()
    linked = set(re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", text))
    on_disk = {p.relative_to(report.out).as_posix() for p in (report.out / "figures").glob("*.png")}
    assert linked == on_disk
    assert (
        "> **Missing:** The in-the-wild sample (aio-synth's wild/clock_motion.png restored): no run saved it."
        in text
    )
    assert "Per-blur-type results for plain: the benchmark has no task labels" in text
    assert "Routing accuracy and confusion for DeMoE-tiny@plain: the benchmark has no task labels." in text
    main = (report.out / "tables" / "main.md").read_text()
    assert main in text


def test_html_embeds_each_figure_as_a_png_and_holds_each_table(report):
    html = (report.out / "report.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == len(list((report.out / "figures").glob("*.png")))
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    for table in report.tables:
        if table.document:
            assert f'data-table="{table.name}"' in html
    assert "timestamp" not in html.lower() and "generated on" not in html.lower()


def test_csv_only_writes_no_page_and_no_figure(store, tmp_path):
    result = build_report(
        Selection(experiment=store.experiment), tmp_path / "csv", ["csv"], tracking_uri=store.uri
    )
    names = set(generated(result.out))
    assert "tables/main.csv" in names and "report.html" not in names and "report.md" not in names
    assert not any(n.startswith("figures/") for n in names)


def test_a_sweep_file_reports_the_sweep_runs_only(store, tmp_path):
    sweep_file = tmp_path / "mini.yaml"
    sweep_file.write_text(yaml.safe_dump(SWEEP))
    result = build_report(
        Selection(experiment=SWEEP_EXPERIMENT, experiment_file=sweep_file), tmp_path / "r", ["csv"], store.uri
    )
    assert [r.key for r in result.collection.evals] == ["DeMoE-tiny@mini-aio", "DeMoE-tiny-k1@mini-aio"]
    assert result.collection.source.startswith(f"sweep 'mini-k' (run {store.sweep_id})")


def test_an_older_run_of_the_same_model_and_benchmark_is_left_out_and_listed(store, tmp_path):
    result = build_report(Selection(experiment=SWEEP_EXPERIMENT), tmp_path / "r", ["tex"], store.uri)
    assert [r.key for r in result.collection.evals] == [
        "DeMoE-tiny@mini-aio",
        "DeMoE-tiny@plain",
        "DeMoE-tiny-k1@mini-aio",
    ]
    assert len(result.collection.left_out) == 1 and "DeMoE-tiny@mini-aio" in result.collection.left_out[0]
    assert "Left out: " in (result.out / "tables" / "runs.tex").read_text()


def test_runs_by_id_and_filters(store, tmp_path):
    by_id = build_report(
        Selection(run_ids=[store.sweep_id], benches=["mini-aio"], models=["DeMoE-tiny-k1"]),
        tmp_path / "a",
        ["csv"],
        store.uri,
    )
    assert [r.key for r in by_id.collection.evals] == ["DeMoE-tiny-k1@mini-aio"]
    with pytest.raises(ReportError, match="--benches nowhere: no finished evaluation"):
        build_report(
            Selection(experiment=store.experiment, benches=["nowhere"]), tmp_path / "b", ["csv"], store.uri
        )
    assert not (tmp_path / "b").exists()


def test_a_folder_that_is_not_a_report_is_never_overwritten(store, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(
        ReportError, match="--out .*mine: exists and holds files that are not a demoe-eval report"
    ):
        build_report(Selection(experiment=store.experiment), tmp_path / "mine", ["csv"], store.uri)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_store_that_does_not_exist_is_named_and_not_created(tmp_path):
    missing = tmp_path / "elsewhere" / "mlflow.db"
    with pytest.raises(ReportError, match=f"no MLflow store at {missing}; .* pass --tracking-uri"):
        build_report(Selection(), tmp_path / "r", ["csv"], f"sqlite:///{missing}")
    assert not missing.parent.exists() and not (tmp_path / "r").exists()
