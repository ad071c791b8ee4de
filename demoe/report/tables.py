"""The report's tables, built from collected runs (rendered by ``demoe.report.formats``).

Output is deterministic: rows sorted, numbers in fixed formats, missing values ``n/a``; means carry
their bootstrap confidence intervals where the runs logged them (or, per blur type, from the per-image
values with the same seeded settings).
"""

import math

from demoe.records import Statistics
from demoe.report.collect import Collection, EvalRun, FinetuneRun
from demoe.report.formats import (
    Column,
    Estimate,
    Table,
    lower_better,
    metric_format,
    metric_title,
    ordered_metrics,
    slug,
)
from demoe.report.intervals import column_estimate, interval_note
from demoe.report.intervals import estimate as _estimate
from demoe.report.protocols import channel_notes
from demoe.vocab import TASK_SHORT as SHORT
from demoe.vocab import TASKS, mode_rank


def _metric_columns(metrics: list[str], group: str, prefix: str) -> list[Column]:
    return [
        Column(f"{prefix}{m}", metric_title(m), group, metric_format(m), lower_better(m)) for m in metrics
    ]


def _mean(values: list) -> float | None:
    return None if not values or any(v is None for v in values) else sum(values) / len(values)


def routing_name(run: EvalRun, mode: str) -> str:
    return "-" if mode == "auto" and not run.has_router else mode


def main_table(collection: Collection, paper: dict[str, dict] | None = None) -> Table:
    """One row per (model, routing mode), a column group per benchmark, the average, cost columns.

    ``paper`` maps a model name to its zoo entry's ``paper`` figures ``{bench: {metric: value}}``.
    """
    evals = collection.evals
    benches = sorted({r.bench for r in evals})
    metrics = ordered_metrics(m for r in evals for m in r.metrics_requested)
    columns = [Column("model", "Model"), Column("routing", "Routing")]
    for bench in benches:
        columns += _metric_columns(metrics, bench, f"{bench}/")
    average = len(benches) > 1
    if average:
        columns += _metric_columns(metrics, "Average", "average/")
    columns += [
        Column("params_m", "Params (M)", fmt="{:.2f}"),
        Column("gflops_256", "GFLOPs@256", fmt="{:.2f}"),
        Column("seconds_per_image", "s/img", fmt="{:.4f}"),
    ]
    table = Table("main", "Restoration quality per benchmark and routing mode", columns)

    by_key = {(r.label, r.bench): r for r in evals}
    identity = []
    for bench in benches:
        runs = [r for r in evals if r.bench == bench and "identity" in r.modes]
        identity += [_estimate(runs[0].modes["identity"], m) if runs else None for m in metrics]
    table.add(
        [
            "Blurred input",
            "identity",
            *identity,
            *_averages(identity, metrics, benches, average),
            "-",
            "-",
            "-",
        ]
    )

    for label in sorted({r.label for r in evals}):
        runs = [by_key[(label, b)] for b in benches if (label, b) in by_key]
        modes = sorted({m for r in runs for m in r.modes if m != "identity"}, key=mode_rank)
        first = runs[0]
        for n, mode in enumerate(modes):
            values = []
            for bench in benches:
                result = by_key[(label, bench)].modes.get(mode) if (label, bench) in by_key else None
                values += [_estimate(result, m) for m in metrics]
            timed = [
                r.modes[mode] for r in runs if mode in r.modes and r.modes[mode].seconds_per_image is not None
            ]
            images = sum(t.images for t in timed)
            seconds = sum(t.seconds_per_image * t.images for t in timed) / images if images else None
            params = first.costs.params / 1e6 if first.costs.params else None
            gflops = first.costs.gflops
            table.add(
                [label, routing_name(first, mode), *values, *_averages(values, metrics, benches, average)]
                + [params, gflops, seconds],
                ranked=True,
                rule=n == 0,
            )
        published = (paper or {}).get(label) or {}
        if published and any(b in published for b in benches):
            values = []
            for bench in benches:
                figures = published.get(bench) or {}
                values += [_paper_value(figures, m, metrics) for m in metrics]
            table.add(
                [f"{label} (paper)", "as published", *values, *_averages(values, metrics, benches, average)]
                + ["-"] * 3
            )

    table.notes += _main_notes(collection, benches, table)
    return table


def _paper_value(figures: dict, metric: str, metrics: list[str]) -> float | None:
    """The paper's figure for ``metric``; a paper's plain ``ssim`` fills our SSIM column when we have no SSIM-Y."""
    if metric in figures:
        return float(figures[metric])
    if metric == "ssimc" and "ssim" in figures and "ssim" not in metrics:
        return float(figures["ssim"])
    return None


def _averages(values: list, metrics: list[str], benches: list[str], average: bool) -> list:
    if not average:
        return []
    n = len(metrics)
    return [_mean([values[b * n + j] for b in range(len(benches))]) for j in range(n)]


def _main_notes(collection: Collection, benches: list[str], table: Table) -> list[str]:
    evals = collection.evals
    notes = [
        "Best restored value per column in bold (↑ higher is better, ↓ lower is better, as pyiqa ranks them).",
        interval_note(evals),
        "identity: the blurred input scored against the sharp image, the floor every model must beat.",
    ]
    if len(benches) > 1:
        notes.append(
            "Average: mean over the benchmarks (no interval), n/a unless the row has every benchmark."
        )
    devices = sorted({r.results.timing.device for r in evals if r.results is not None} - {""})
    notes.append(
        "Params: all parameters; GFLOPs of one 256x256 forward; s/img: measured seconds per image"
        + (f" on {', '.join(devices)}." if devices else ".")
    )
    if any(row[1] == "as published" for row in table.rows):
        notes.append(
            "Rows marked (paper): the figures published with the model, under the paper's own protocol."
        )
    unavailable: dict[tuple[str, str], list[str]] = {}
    for run in evals:
        for metric, reason in run.metrics_unavailable.items():
            unavailable.setdefault((metric, reason), []).append(run.key)
    for (metric, reason), keys in sorted(unavailable.items()):
        where = "every run" if len(keys) == len(evals) else ", ".join(keys)
        notes.append(f"{metric_title(metric)} n/a ({where}): not computed, {reason}.")
    for run in evals:
        if run.protocol_note:
            notes.append(f"{run.key}: {run.protocol_note}")
    notes += channel_notes(evals)
    for bench in benches:
        counts = sorted(
            {r.modes["identity"].images for r in evals if r.bench == bench and "identity" in r.modes}
        )
        fingerprints = {r.bench_fingerprint for r in evals if r.bench == bench}
        if len(counts) > 1 or len(fingerprints) > 1:
            notes.append(
                f"{bench}: the runs cover different image sets ({', '.join(map(str, counts))} images); "
                "identity shows the first model's set."
            )
    return notes


def per_task_table(runs: list[EvalRun]) -> Table | None:
    """Per task label of one labelled benchmark: the mean of the per-image metrics, rows as in the main table."""
    runs = [r for r in runs if r.labelled]
    if not runs:
        return None
    bench = runs[0].bench
    metrics = ordered_metrics(m for r in runs for m in r.metrics_requested)
    tasks = [t for t in TASKS if any((r.per_image["label"] == t).any() for r in runs)]
    columns = [Column("model", "Model"), Column("routing", "Routing")]
    for task in tasks:
        columns += _metric_columns(metrics, SHORT.get(task, task), f"{task}/")
    if len(tasks) > 1:
        columns += _metric_columns(metrics, "Task mean", "task_mean/")
    table = Table(f"per_task__{slug(bench)}", f"{bench}: quality per blur type", columns)

    def cells(run: EvalRun, mode: str) -> list:
        rows = run.per_image[run.per_image["mode"] == mode]
        values = []
        for task in tasks:
            of_task = rows[rows["label"] == task]
            values += [column_estimate(of_task, m, run.statistics or Statistics()) for m in metrics]
        if len(tasks) > 1:
            values += [
                _mean([values[t * len(metrics) + j] for t in range(len(tasks))]) for j in range(len(metrics))
            ]
        return values

    table.add(["Blurred input", "identity", *cells(runs[0], "identity")])
    for run in sorted(runs, key=lambda r: r.label):
        for n, mode in enumerate(m for m in run.ordered_modes() if m != "identity"):
            table.add([run.label, routing_name(run, mode), *cells(run, mode)], ranked=True, rule=n == 0)
    counts = runs[0].per_image[runs[0].per_image["mode"] == "identity"]["label"].value_counts()
    table.notes.append(
        "Images per blur type: "
        + ", ".join(f"{SHORT.get(t, t)} {int(counts.get(t, 0))}" for t in tasks)
        + "."
    )
    table.notes.append(interval_note(runs, "the mean over the images of the blur type"))
    if len(tasks) > 1:
        table.notes.append(
            "Task mean: the mean of the per-type means (each blur type weighs the same; no interval)."
        )
    return table


def routing_table(evals: list[EvalRun]) -> Table:
    columns = [
        Column("model", "Model"),
        Column("bench", "Benchmark"),
        Column("images", "Images"),
        Column("routing_accuracy_pct", "Routing accuracy (%)", fmt="{:.1f}"),
        Column("psnr_auto", "PSNR auto (dB)", fmt="{:.2f}"),
        Column("psnr_oracle", "PSNR oracle (dB)", fmt="{:.2f}"),
        Column("gap_db", "Auto − oracle (dB)", fmt="{:+.2f}"),
        Column("p_wilcoxon", "p (Wilcoxon)", fmt="{:.2g}"),
    ]
    table = Table("routing", "The router against the right expert (oracle routing)", columns)
    for run in evals:
        if not run.has_router:
            continue
        auto, oracle = run.modes.get("auto"), run.modes.get("oracle")
        psnr_auto, psnr_oracle = _estimate(auto, "psnr"), _estimate(oracle, "psnr")
        accuracy = auto.routing_accuracy if auto else None
        paired = run.comparisons.get(("auto", "oracle", "psnr"))
        if paired is not None and paired.mean_diff is not None and paired.interval is not None:
            gap = Estimate(paired.mean_diff, paired.interval.low, paired.interval.high)
        elif paired is not None and paired.mean_diff is not None:
            gap = paired.mean_diff
        else:
            gap = None if psnr_auto is None or psnr_oracle is None else psnr_auto - psnr_oracle
        table.add(
            [
                run.label,
                run.bench,
                auto.images if auto else None,
                None if accuracy is None else 100 * accuracy,
                psnr_auto,
                psnr_oracle,
                gap,
                paired.p_wilcoxon if paired is not None else None,
            ]
        )
    table.notes.append(
        "Auto − oracle: the mean over images of PSNR with the router's choice minus PSNR with the benchmark's "
        "own blur label forced, in brackets its paired bootstrap interval; negative where the router costs "
        "quality. n/a where the benchmark has no labels or oracle was not run."
    )
    table.notes.append(
        "p (Wilcoxon): two-sided Wilcoxon signed-rank test of the per-image differences (zero differences "
        "dropped); n/a with fewer than 2 images, when every difference is zero, or for runs logged without it."
    )
    table.notes.append(interval_note(evals))
    return table


def confusion_table(run: EvalRun, shown_as: str | None = None) -> Table | None:
    """The router's confusion of ``run`` (titled ``shown_as`` where it stands for several runs)."""
    auto = run.summary("auto")
    if auto is None or auto.confusion is None:
        return None
    labels, matrix = auto.confusion.labels, auto.confusion.matrix
    columns = [Column("true", "True blur")]
    columns += [Column(f"pred_{t}", SHORT.get(t, t), "Router's choice") for t in labels]
    columns += [Column("images", "Images"), Column("accuracy_pct", "Correct (%)", fmt="{:.1f}")]
    table = Table(
        f"confusion__{slug(run.key)}", f"Router confusion of {shown_as or run.label} on {run.bench}", columns
    )
    for label, counts in zip(labels, matrix, strict=True):
        total = sum(counts)
        if total:
            table.add([SHORT.get(label, label), *counts, total, 100 * counts[labels.index(label)] / total])
    table.notes.append(
        "Rows: the images' true blur; columns: the expert the router chose (counts of images)."
    )
    return table


def worst_images_table(evals: list[EvalRun], per_run: int = 5) -> Table:
    columns = [
        Column("model", "Model"),
        Column("bench", "Benchmark"),
        Column("image", "Image"),
        Column("label", "Blur"),
        Column("router", "Router's choice"),
        Column("psnr_auto", "PSNR auto (dB)", fmt="{:.2f}"),
        Column("psnr_oracle", "PSNR oracle (dB)", fmt="{:.2f}"),
        Column("lost_db", "Lost (dB)", fmt="{:.2f}"),
    ]
    table = Table("worst_images", "Images where auto routing lost most against oracle routing", columns)
    for run in evals:
        for n, row in enumerate(auto_losses(run)[:per_run]):
            table.add(
                [run.label, run.bench, row["name"], row["label"], row["pred_task"]]
                + [row["psnr_auto"], row["psnr_oracle"], row["lost"]],
                rule=n == 0,
            )
    table.notes.append("Lost: PSNR of oracle routing minus PSNR of auto routing on the same image.")
    return table


def auto_losses(run: EvalRun) -> list[dict]:
    """Images of ``run`` where auto routing scored below oracle routing, largest loss first."""
    table = run.per_image
    if table is None or "psnr" not in table.columns or not {"auto", "oracle"} <= set(table["mode"]):
        return []
    columns = ["name", "label", "pred_task", "psnr"]
    auto = table[table["mode"] == "auto"].reindex(columns=columns).rename(columns={"psnr": "psnr_auto"})
    oracle = table[table["mode"] == "oracle"][["name", "psnr"]].rename(columns={"psnr": "psnr_oracle"})
    both = auto.merge(oracle, on="name", how="inner")
    both["lost"] = both["psnr_oracle"] - both["psnr_auto"]
    both = both[both["lost"] > 0].sort_values(["lost", "name"], ascending=[False, True], kind="stable")
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in both.to_dict("records")
    ]


def k_sweep_groups(evals: list[EvalRun]) -> list[list[EvalRun]]:
    """Runs of one model and checkpoint evaluated with two or more values of k."""
    groups: dict[tuple[str, str], list[EvalRun]] = {}
    for run in evals:
        if run.k is not None:
            groups.setdefault((run.model, run.checkpoint_sha256), []).append(run)
    return [
        sorted(g, key=lambda r: (r.k, r.bench))
        for _, g in sorted(groups.items())
        if len({r.k for r in g}) > 1
    ]


def k_sweep_table(evals: list[EvalRun]) -> Table | None:
    groups = k_sweep_groups(evals)
    if not groups:
        return None
    runs = [r for g in groups for r in g]
    benches = sorted({r.bench for r in runs})
    metrics = ordered_metrics(m for r in runs for m in r.metrics_requested)
    columns = [
        Column("model", "Model"),
        Column("k", "k"),
        Column("params_m", "Params (M)", fmt="{:.2f}"),
        Column("active_params_m", "Active params (M)", fmt="{:.2f}"),
        Column("gflops_256", "GFLOPs@256", fmt="{:.2f}"),
    ]
    for bench in benches:
        columns += _metric_columns(metrics, bench, f"{bench}/")
        columns.append(Column(f"{bench}/seconds_per_image", "s/img", bench, "{:.4f}"))
    table = Table("k_sweep", "Active experts per MoE block (k), auto routing", columns)
    for group in groups:
        by = {(r.k, r.bench): r for r in group}
        for n, k in enumerate(sorted({r.k for r in group})):
            first = next(r for r in group if r.k == k)
            row = [first.model, k]
            row += [_millions(first.costs.params), _millions(first.costs.active_params), first.costs.gflops]
            for bench in benches:
                auto = by[(k, bench)].modes.get("auto") if (k, bench) in by else None
                row += [_estimate(auto, m) for m in metrics]
                row.append(auto.seconds_per_image if auto else None)
            table.add(row, ranked=True, rule=n == 0)
    table.notes.append("Active params: parameters outside the MoE blocks plus k experts of each block.")
    table.notes.append(interval_note(runs))
    return table


def _millions(value: int | None) -> float | None:
    return None if value is None else value / 1e6


def finetune_table(finetunes: list[FinetuneRun]) -> Table | None:
    """Per finetuning run: where it started, what it trained on, its last losses and its validation figures."""
    if not finetunes:
        return None
    keys = sorted({k for f in finetunes for k in f.curves})
    last = [k for k in ("train/loss", "train/router_ce") if k in keys]
    val = [k for k in keys if k.startswith("val/") and k.count("/") == 1]
    columns = [
        Column("run", "Run"),
        Column("start", "Started from"),
        Column("train_bench", "Trained on"),
        Column("steps", "Last step"),
    ]
    columns += [Column(f"{k}/last", k, "last", "{:.4g}") for k in last + val]
    columns += [Column(f"{k}/best", k, "best", "{:.4g}") for k in val]
    table = Table("finetune", "Finetuning runs", columns)
    for run in finetunes:
        steps = [s for curve in run.curves.values() for s, _ in curve]
        row = [run.name, run.tags.get("demoe.start", "-"), run.tags.get("demoe.train_bench", "-")]
        row.append(max(steps) if steps else None)
        row += [run.curves[k][-1][1] if run.curves.get(k) else None for k in last + val]
        for key in val:
            values = [v for _, v in run.curves.get(key, [])]
            row.append((min if lower_better(key) else max)(values) if values else None)
        table.add(row)
    table.notes.append(
        "last: the value at the last logged step; best: the best validation value (pyiqa's direction); "
        "val/M is the first validation routing mode."
    )
    return table


def runs_table(collection: Collection) -> Table:
    columns = [
        Column("run", "Run"),
        Column("run_id", "Run id"),
        Column("split", "Split"),
        Column("k", "k"),
        Column("images", "Images"),
        Column("checkpoint_sha256", "Checkpoint sha256"),
        Column("bench_fingerprint", "Benchmark fingerprint"),
    ]
    table = Table("runs", "The runs this report is made of", columns)
    for run in collection.evals:
        images = max((m.images for m in run.modes.values()), default=None)
        _link_run_id(table, collection.run_url(run.experiment_id, run.run_id))
        table.add(
            [
                run.key,
                run.run_id,
                run.split,
                run.k,
                images,
                run.checkpoint_sha256[:12],
                run.bench_fingerprint[:12],
            ]
        )
    for finetune in collection.finetunes:
        _link_run_id(table, collection.run_url(finetune.experiment_id, finetune.run_id))
        table.add([finetune.name, finetune.run_id, "-", "-", "-", "-", "-"])
    table.notes += [f"Left out: {item}" for item in collection.left_out]
    return table


def _link_run_id(table: Table, url: str | None) -> None:
    """Link the run id of the row about to be added to the run's page in the tracking server's UI."""
    if url:
        table.links[(len(table.rows), 1)] = url
    if url and not any("MLflow UI" in note for note in table.notes):
        table.notes.append("Run ids link to the runs in the tracking server's MLflow UI.")


def expert_usage_table(evals: list[EvalRun]) -> Table | None:
    """Long table of expert choices: per run, routing mode, image label and MoE block, the count per expert."""
    columns = [
        Column("model", "Model"),
        Column("bench", "Benchmark"),
        Column("routing", "Routing"),
        Column("label", "Blur"),
        Column("block", "Block"),
    ]
    columns += [Column(f"expert_{i}_{t}", f"E{i}") for i, t in enumerate(TASKS)]
    table = Table("expert_usage", "Expert choices per MoE block and blur type", columns, document=False)
    for run in evals:
        for mode in run.ordered_modes():
            summary = run.summary(mode)
            usage = (summary.expert_usage if summary is not None else None) or {}
            for label, blocks in sorted(usage.items()):
                for block, counts in enumerate(blocks):
                    table.add([run.label, run.bench, mode, label, block, *counts])
    return table if table.rows else None
