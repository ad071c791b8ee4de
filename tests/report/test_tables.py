"""The report's tables against the per-image data they came from, read back from a real MLflow store."""

import io

import pandas as pd
import pytest
import yaml

from demoe.report import formats, tables
from demoe.report.collect import add_costs
from demoe.vocab import TASKS


def per_image(folder) -> pd.DataFrame:
    return pd.read_parquet(folder / "per_image.parquet")


def read_csv(table: formats.Table) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(formats.to_csv(table)), keep_default_na=False)


def test_main_table_is_the_mean_of_the_per_image_values(collection, store):
    main = read_csv(tables.main_table(collection)).set_index(["model", "routing"])
    for folder, label, bench in (
        (store.labelled, "DeMoE-tiny", "mini-aio"),
        (store.labelled_k1, "DeMoE-tiny-k1", "mini-aio"),
        (store.plain, "DeMoE-tiny", "plain"),
    ):
        table = per_image(folder)
        for mode, rows in table.groupby("mode"):
            if mode == "identity":
                continue
            for metric in ("psnr", "ssimc"):
                assert float(main.loc[(label, mode), f"{bench}/{metric}"]) == pytest.approx(
                    rows[metric].mean(), abs=1e-6
                )
    identity = per_image(store.labelled_k1)
    identity = identity[identity["mode"] == "identity"]
    assert float(main.loc[("Blurred input", "identity"), "mini-aio/psnr"]) == pytest.approx(
        identity["psnr"].mean(), abs=1e-6
    )


def test_a_metric_that_could_not_run_is_na_everywhere_never_zero(collection):
    main = tables.main_table(collection)
    csv = read_csv(main)
    assert set(csv["mini-aio/lpips"]) == {"n/a"} and set(csv["plain/lpips"]) == {"n/a"}
    markdown = formats.to_markdown(main)
    lpips_columns = [i for i, c in enumerate(main.columns) if c.key.endswith("/lpips")]
    for line in markdown.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(cells[i] == "n/a" for i in lpips_columns)
    assert any(note.startswith("LPIPS n/a (every run): not computed") for note in main.notes)


def test_the_average_needs_every_benchmark(collection):
    csv = read_csv(tables.main_table(collection)).set_index(["model", "routing"])
    both = csv.loc[("DeMoE-tiny", "auto")]
    expected = (float(both["mini-aio/psnr"]) + float(both["plain/psnr"])) / 2
    assert float(both["average/psnr"]) == pytest.approx(expected, abs=1e-6)
    assert csv.loc[("DeMoE-tiny-k1", "auto"), "average/psnr"] == "n/a"
    assert csv.loc[("DeMoE-tiny", "oracle"), "plain/psnr"] == "n/a"


def test_best_value_per_column_follows_the_metric_direction(collection):
    main = tables.main_table(collection)
    marked = formats.best_cells(main)
    for j, column in enumerate(main.columns):
        values = [
            (i, row[j]) for i, row in enumerate(main.rows) if main.ranked[i] and isinstance(row[j], float)
        ]
        if column.lower_better is None or len(values) < 2:
            assert not any(c == j for _, c in marked)
            continue
        best = max(round(v, 2 if "psnr" in column.key else 4) for _, v in values)
        assert {i for i, c in marked if c == j} == {
            i for i, v in values if round(v, 2 if "psnr" in column.key else 4) == best
        }
    assert formats.lower_better("lpips") and not formats.lower_better("psnr")


def test_per_task_table_groups_the_per_image_values_by_label(collection, store):
    run = next(r for r in collection.evals if r.key == "DeMoE-tiny@mini-aio")
    table = read_csv(tables.per_task_table([r for r in collection.evals if r.bench == "mini-aio"]))
    table = table.set_index(["model", "routing"])
    data = per_image(store.labelled)
    for task in TASKS:
        rows = data[(data["mode"] == "oracle") & (data["label"] == task)]
        assert float(table.loc[("DeMoE-tiny", "oracle"), f"{task}/psnr"]) == pytest.approx(
            rows["psnr"].mean(), abs=1e-6
        )
    means = [float(table.loc[("DeMoE-tiny", "auto"), f"{t}/psnr"]) for t in TASKS]
    assert float(table.loc[("DeMoE-tiny", "auto"), "task_mean/psnr"]) == pytest.approx(
        sum(means) / 5, abs=1e-5
    )
    assert run.labelled and tables.per_task_table([r for r in collection.evals if r.bench == "plain"]) is None


def test_routing_table_gap_and_accuracy_come_from_the_same_images(collection, store):
    table = read_csv(tables.routing_table(collection.evals)).set_index(["model", "bench"])
    data = per_image(store.labelled)
    auto, oracle = data[data["mode"] == "auto"], data[data["mode"] == "oracle"]
    row = table.loc[("DeMoE-tiny", "mini-aio")]
    assert float(row["gap_db"]) == pytest.approx(auto["psnr"].mean() - oracle["psnr"].mean(), abs=1e-6)
    accuracy = (auto["pred_task"] == auto["label"]).mean() * 100
    assert float(row["routing_accuracy_pct"]) == pytest.approx(accuracy, abs=1e-6)
    unlabelled = table.loc[("DeMoE-tiny", "plain")]
    assert unlabelled["routing_accuracy_pct"] == "n/a" and unlabelled["gap_db"] == "n/a"


def test_confusion_table_counts_the_routers_choices(collection, store):
    run = next(r for r in collection.evals if r.key == "DeMoE-tiny@mini-aio")
    table = read_csv(tables.confusion_table(run)).set_index("true")
    data = per_image(store.labelled)
    auto = data[data["mode"] == "auto"]
    counts = pd.crosstab(auto["label"], auto["pred_task"])
    short = {"defocus": "defocus", "global_motion": "global", "local_motion": "local"}
    short |= {"synth_global_motion": "synth", "low_light": "low-light"}
    for label in TASKS:
        for predicted in TASKS:
            expected = int(counts.loc[label, predicted]) if predicted in counts.columns else 0
            assert int(table.loc[short[label], f"pred_{predicted}"]) == expected


def test_worst_images_are_the_largest_oracle_minus_auto_losses(collection, store):
    table = read_csv(tables.worst_images_table(collection.evals))
    ours = table[table["model"] == "DeMoE-tiny"]
    data = per_image(store.labelled)
    auto = data[data["mode"] == "auto"].set_index("name")["psnr"]
    oracle = data[data["mode"] == "oracle"].set_index("name")["psnr"]
    lost = (oracle - auto)[lambda s: s > 0].sort_values(ascending=False)
    assert list(ours["image"]) == list(lost.index[: len(ours)])
    assert [float(v) for v in ours["lost_db"]] == pytest.approx(list(lost.values[: len(ours)]), abs=1e-6)


def test_k_sweep_compares_the_two_k_of_one_checkpoint(collection):
    table = tables.k_sweep_table(collection.evals)
    csv = read_csv(table).set_index("k")
    assert list(csv.index) == [1, 2]
    assert float(csv.loc[1, "active_params_m"]) < float(csv.loc[2, "active_params_m"])
    assert float(csv.loc[1, "params_m"]) == float(csv.loc[2, "params_m"])
    assert float(csv.loc[1, "gflops_256"]) < float(csv.loc[2, "gflops_256"])


def test_latex_is_booktabs_with_escaped_names(collection):
    tex = formats.to_latex(tables.main_table(collection))
    assert tex.count(r"\toprule") == 1 and tex.count(r"\bottomrule") == 1
    assert r"\multicolumn{3}{c}{mini-aio}" in tex and r"low\_light" in tex
    assert r"PSNR (dB)$\uparrow$" in tex and r"LPIPS$\downarrow$" in tex


def test_finetune_table_reports_last_and_best_validation(collection):
    table = read_csv(tables.finetune_table(collection.finetunes))
    run = collection.finetunes[0]
    best = max(v for _, v in run.curves["val/psnr"])
    assert float(table.loc[0, "val/psnr/best"]) == pytest.approx(best, rel=1e-3)
    assert int(table.loc[0, "steps"]) == 4


def test_the_papers_figures_stand_beside_ours_labelled_and_never_ranked(collection, tmp_path):
    zoo_dir = tmp_path / "zoo"
    zoo_dir.mkdir()
    entry = {
        "name": "DeMoE-tiny",
        "arch": "DeMoE",
        "kwargs": {"img_channel": 3, "width": 8, "middle_blk_num": 1, "enc_blk_nums": [1, 1]}
        | {"dec_blk_nums": [1, 1], "num_exp": 5, "k_used": 2},
        "paper": {"mini-aio": {"psnr": 99.5, "ssim": 0.9123}},
    }
    (zoo_dir / "tiny.yaml").write_text(yaml.safe_dump(entry))
    paper = add_costs(collection, [zoo_dir])
    assert paper == {"DeMoE-tiny": {"mini-aio": {"psnr": 99.5, "ssim": 0.9123}}}
    main = tables.main_table(collection, paper)
    csv = read_csv(main).set_index(["model", "routing"])
    row = csv.loc[("DeMoE-tiny (paper)", "as published")]
    assert float(row["mini-aio/psnr"]) == 99.5 and float(row["mini-aio/ssimc"]) == 0.9123
    assert row["plain/psnr"] == "n/a" and row["mini-aio/lpips"] == "n/a"
    paper_row = [i for i, r in enumerate(main.rows) if r[0] == "DeMoE-tiny (paper)"][0]
    assert not any(i == paper_row for i, _ in formats.best_cells(main))
    assert "**99.50**" not in formats.to_markdown(main) and "99.50" in formats.to_markdown(main)
    add_costs(collection)


def _scipy_interval(values) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean, as results.json's statistics say it is made."""
    import numpy as np
    from scipy import stats

    result = stats.bootstrap(
        (np.asarray(values, dtype=np.float64),),
        np.mean,
        n_resamples=10000,
        method="percentile",
        batch=1000,
        rng=np.random.default_rng(0),
    )
    return result.confidence_interval.low, result.confidence_interval.high


def test_main_table_shows_each_mean_with_its_bootstrap_interval_over_images(collection, store):
    main = tables.main_table(collection)
    csv = read_csv(main).set_index(["model", "routing"])
    markdown = formats.to_markdown(main)
    data = per_image(store.labelled)
    for mode in ("identity", "auto", "oracle"):
        values = data[data["mode"] == mode]["psnr"]
        low, high = _scipy_interval(values)
        row = ("Blurred input", "identity") if mode == "identity" else ("DeMoE-tiny", mode)
        assert float(csv.loc[row, "mini-aio/psnr_ci_low"]) == pytest.approx(low, abs=1e-6)
        assert float(csv.loc[row, "mini-aio/psnr_ci_high"]) == pytest.approx(high, abs=1e-6)
        line = next(x for x in markdown.splitlines() if x.startswith(f"| {row[0]} | {row[1]} |"))
        cell = line.strip("|").split("|")[2].strip()
        assert cell.replace("*", "") == f"{values.mean():.2f} [{low:.2f}, {high:.2f}]"
    assert any(
        "95% bootstrap confidence interval (percentile method, 10000 resamples of the images, seed 0)" in note
        for note in main.notes
    )
    assert "average/psnr" in csv.columns and "average/psnr_ci_low" not in csv.columns, "an average has none"


def test_per_task_means_carry_the_bootstrap_interval_of_their_images(collection, store):
    table = read_csv(tables.per_task_table([r for r in collection.evals if r.bench == "mini-aio"]))
    data = per_image(store.labelled)
    rows = data[(data["mode"] == "auto") & (data["label"] == "low_light")]["psnr"]
    low, high = _scipy_interval(rows)
    row = table.set_index(["model", "routing"]).loc[("DeMoE-tiny", "auto")]
    assert float(row["low_light/psnr_ci_low"]) == pytest.approx(low, abs=1e-6)
    assert float(row["low_light/psnr_ci_high"]) == pytest.approx(high, abs=1e-6)


def test_routing_table_tests_auto_against_oracle_on_the_same_images(collection, store):
    from scipy import stats

    table = read_csv(tables.routing_table(collection.evals)).set_index(["model", "bench"])
    data = per_image(store.labelled)
    auto = data[data["mode"] == "auto"].set_index("name")["psnr"]
    oracle = data[data["mode"] == "oracle"].set_index("name")["psnr"]
    differences = (auto - oracle.reindex(auto.index)).to_numpy()
    row = table.loc[("DeMoE-tiny", "mini-aio")]
    low, high = _scipy_interval(differences)
    assert float(row["gap_db_ci_low"]) == pytest.approx(low, abs=1e-6)
    assert float(row["gap_db_ci_high"]) == pytest.approx(high, abs=1e-6)
    if differences.any():
        assert float(row["p_wilcoxon"]) == pytest.approx(stats.wilcoxon(differences).pvalue, abs=1e-6)
    else:
        assert row["p_wilcoxon"] == "n/a"
