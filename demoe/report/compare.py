"""``demoe-eval report --compare A B``: two models, or two runs, compared image by image on every
benchmark both were evaluated on, from the per-image tables logged with their runs. Per benchmark,
routing mode and metric: the means of A and B over the images both scored, the mean of the per-image
differences A - B with its bootstrap interval, and the Wilcoxon signed-rank p-value.

A and B are row labels or zoo model names (the latest finished run of the experiment for each
benchmark) or MLflow run ids (that evaluation itself, so two runs of one model can be compared).
"""

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demoe.metrics.stats import compare
from demoe.records import Comparison, Statistics
from demoe.report.collect import EvalRun, ReportError, Selection, collect
from demoe.report.formats import Column, Table, metric_format, metric_title, ordered_metrics
from demoe.vocab import IDENTITY, mode_rank

RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Side:
    name: str  # as given on the command line
    runs: dict[str, EvalRun]  # BENCH/SPLIT -> its run

    def shown(self, bench: str) -> str:
        run = self.runs[bench]
        return f"{run.label} (run {run.run_id[:8]})"


def compare_runs(
    selection: Selection,
    a: str,
    b: str,
    tracking_uri: str | None = None,
    statistics: Statistics | None = None,
) -> Table:
    """The paired comparison of ``a`` and ``b`` (see the module's doc) as a table; one-line
    ``ReportError``s when either names nothing or the two share no benchmark or image."""
    statistics = statistics or Statistics()
    with tempfile.TemporaryDirectory(prefix="demoe-compare-") as downloads:
        collected: dict = {}  # the experiment's runs and where they came from, read once for both sides
        sides = [_side(name, selection, Path(downloads), tracking_uri, collected) for name in (a, b)]
    return comparison_table(*sides, statistics)


def _side(
    name: str, selection: Selection, downloads: Path, tracking_uri: str | None, collected: dict
) -> Side:
    if RUN_ID.fullmatch(name):
        try:
            evals = collect(Selection(run_ids=[name]), downloads / name, tracking_uri).evals
        except ReportError as e:  # its message names the option it read the id from
            raise ReportError(str(e).replace("--runs ", "--compare ", 1)) from None
        where = f"run {name}"
    else:
        if "experiment" not in collected:
            pool = Selection(
                experiment=selection.experiment,
                experiment_file=selection.experiment_file,
                benches=selection.benches,
            )
            collection = collect(pool, downloads / "experiment", tracking_uri)
            collected["experiment"], collected["source"] = collection.evals, collection.source
        pool_runs, where = collected["experiment"], collected["source"]
        evals = [r for r in pool_runs if r.label == name] or [r for r in pool_runs if r.model == name]
        if not evals:
            known = ", ".join(sorted({r.label for r in pool_runs})) or "none"
            raise ReportError(
                f"--compare {name}: no finished evaluation of that model (or run id) in {where}; it has {known}"
            )
    if not evals:
        raise ReportError(f"--compare {name}: {where} holds no finished evaluation")
    runs: dict[str, EvalRun] = {}
    for run in evals:
        if bench_split(run) in runs:
            labels = ", ".join(sorted(r.label for r in evals if bench_split(r) == bench_split(run)))
            raise ReportError(
                f"--compare {name}: names several runs on {bench_split(run)} ({labels}); give one of those "
                "labels or a run id"
            )
        runs[bench_split(run)] = run
    return Side(name, runs)


def bench_split(run: EvalRun) -> str:
    """What two runs must share to be paired image by image: the benchmark and its split."""
    return f"{run.bench}/{run.split}" if run.split else run.bench


def _paired(a: EvalRun, b: EvalRun, mode: str, metric: str) -> list[tuple[float | None, float | None]]:
    """(a's value, b's value) of each image both scored in ``mode``."""
    columns = ["name", metric]
    left = a.per_image[a.per_image["mode"] == mode][columns]
    right = b.per_image[b.per_image["mode"] == mode][columns]
    both = left.merge(right, on="name", suffixes=("_a", "_b")).sort_values("name", kind="stable")
    return [
        (None if x != x else float(x), None if y != y else float(y))
        for x, y in zip(both[f"{metric}_a"], both[f"{metric}_b"], strict=True)
    ]


def _means(pairs: list[tuple[float | None, float | None]]) -> tuple[float, float]:
    both = np.array([p for p in pairs if None not in p], dtype=np.float64)
    return float(both[:, 0].mean()), float(both[:, 1].mean())


def _diff_text(comparison: Comparison, fmt: str) -> str:
    signed = fmt.replace("{:", "{:+")
    text = signed.format(comparison.mean_diff)
    if comparison.interval is not None:
        text += f" [{signed.format(comparison.interval.low)}, {signed.format(comparison.interval.high)}]"
    return text


def comparison_table(a: Side, b: Side, statistics: Statistics) -> Table:
    common = sorted(a.runs.keys() & b.runs.keys())
    if not common:
        raise ReportError(
            f"--compare {a.name} {b.name}: no benchmark evaluated by both ({a.name}: "
            f"{', '.join(sorted(a.runs))}; {b.name}: {', '.join(sorted(b.runs))})"
        )
    columns = [Column("bench", "Benchmark"), Column("routing", "Routing"), Column("metric", "Metric")]
    columns += [Column("images", "Images"), Column("a", "A"), Column("b", "B"), Column("diff", "A − B")]
    columns.append(Column("p_wilcoxon", "p (Wilcoxon)", fmt="{:.2g}"))
    table = Table("compare", f"{a.name} (A) against {b.name} (B), image by image", columns)
    why_not: set[str] = set()
    for bench in common:
        ra, rb = a.runs[bench], b.runs[bench]
        for run in (ra, rb):
            if run.per_image is None:
                raise ReportError(
                    f"--compare: run {run.run_id} ({run.key}) has no per-image table logged; log its "
                    "results folder again with `demoe-eval log DIR`"
                )
        modes = set(ra.per_image["mode"]) & set(rb.per_image["mode"]) - {IDENTITY}
        metrics = ordered_metrics(
            set(ra.metrics_requested) & set(rb.metrics_requested) & set(ra.per_image) & set(rb.per_image)
        )
        for mode in sorted(modes, key=mode_rank):
            first = True  # a rule above each routing mode's rows
            for metric in metrics:
                pairs = _paired(ra, rb, mode, metric)
                comparison = compare(a.name, b.name, metric, pairs, statistics)
                if comparison.images == 0:
                    continue
                fmt = metric_format(metric)
                mean_a, mean_b = _means(pairs)
                table.add(
                    [bench, mode, metric_title(metric), comparison.images, fmt.format(mean_a)]
                    + [fmt.format(mean_b), _diff_text(comparison, fmt), comparison.p_wilcoxon],
                    rule=first,
                )
                first = False
                if comparison.why_not:
                    why_not.add(comparison.why_not)
        table.notes.append(f"{bench}: A = {a.shown(bench)}, B = {b.shown(bench)}.")
        if ra.bench_fingerprint != rb.bench_fingerprint:
            table.notes.append(
                f"{bench}: the two runs saw different files; only images of the same name are paired."
            )
    if not table.rows:
        raise ReportError(
            f"--compare {a.name} {b.name}: no image scored by both on {', '.join(common)} "
            "(in a routing mode and metric both ran)"
        )
    table.notes += [
        "A, B: the means over the paired images (those both scored); A − B: the mean of the per-image "
        f"differences and, in brackets, its {statistics.describe()}.",
        "p (Wilcoxon): scipy's two-sided Wilcoxon signed-rank test of the per-image differences (zero "
        "differences dropped)" + (f"; n/a: {'; '.join(sorted(why_not))}." if why_not else "."),
    ]
    return table
