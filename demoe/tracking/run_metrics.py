"""The metric names of an evaluation's MLflow runs, written (``demoe.tracking.mlflow_runs``) and read
back (``demoe.report.collect``) by the same definitions.

Child run of a routing mode: the pyiqa metrics (``psnr``), their intervals (``psnr_ci_low``,
``psnr_ci_high``), ``routing_accuracy``, ``seconds_per_image``, ``images``, and on a benchmark without
sharp images the router's choices (``routed_defocus``: images the router gave to the defocus task). Parent run: each child's
metrics as ``MODE/NAME``, and the paired comparisons of modes as ``A_vs_B/METRIC_diff`` (the mean of
A - B over the images both scored), ``A_vs_B/METRIC_diff_ci_low``/``_ci_high``,
``A_vs_B/METRIC_p_wilcoxon`` and ``A_vs_B/METRIC_images``.
"""

import math
import re

from demoe.records import Comparison, EvalResult, Interval, ModeSummary

CI_LOW, CI_HIGH = "_ci_low", "_ci_high"  # suffixes of a metric's interval bounds
DIFF, P_WILCOXON, IMAGES = "_diff", "_p_wilcoxon", "_images"  # suffixes of a comparison's metrics
RUN_METRICS = (
    "routing_accuracy",
    "seconds_per_image",
    "images",
)  # a child's metrics that are no pyiqa metric
ROUTED = "routed_"  # prefix of the router's choice counts (benchmarks without sharp images)
COMPARISON_METRIC = re.compile(
    rf"(?P<a>.+)_vs_(?P<b>[^/]+)/(?P<metric>.+?)"
    rf"(?P<part>{DIFF}{CI_LOW}|{DIFF}{CI_HIGH}|{DIFF}|{P_WILCOXON}|{IMAGES})"
)


def mode_metrics(summary: ModeSummary) -> dict[str, float]:
    """A child run's metrics: the pyiqa metrics and their intervals, routing accuracy, seconds per
    image, images."""
    metrics = dict(summary.metrics)
    for name, interval in summary.intervals.items():
        metrics |= {f"{name}{CI_LOW}": interval.low, f"{name}{CI_HIGH}": interval.high}
    for key in ("routing_accuracy", "seconds_per_image"):
        if getattr(summary, key) is not None:
            metrics[key] = getattr(summary, key)
    metrics["images"] = summary.images
    metrics |= {f"{ROUTED}{task}": n for task, n in (summary.decisions or {}).items()}
    return metrics


def comparison_metrics(comparison: Comparison) -> dict[str, float]:
    """A comparison's metrics on the parent run; what is not available is not logged."""
    values = {IMAGES: comparison.images, DIFF: comparison.mean_diff, P_WILCOXON: comparison.p_wilcoxon}
    if comparison.interval is not None:
        values |= {f"{DIFF}{CI_LOW}": comparison.interval.low, f"{DIFF}{CI_HIGH}": comparison.interval.high}
    return {f"{comparison.name}/{comparison.metric}{k}": v for k, v in values.items() if v is not None}


def headline_metrics(result: EvalResult) -> dict[str, float]:
    """The parent run's metrics, so that MLflow's runs table shows every mode without opening children:
    ``MODE/METRIC`` (``auto/psnr``, ``auto/psnr_ci_low``, ``oracle/lpips``, ``auto/routing_accuracy``),
    and the comparisons of modes (``auto_vs_oracle/psnr_diff``, ``auto_vs_oracle/psnr_p_wilcoxon``)."""
    metrics = {
        f"{mode}/{name}": value
        for mode, summary in result.results.items()
        for name, value in mode_metrics(summary).items()
        if name != "images"
    }
    for comparison in result.comparisons:
        metrics |= comparison_metrics(comparison)
    return metrics


def means_and_intervals(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, Interval]]:
    """A child run's pyiqa metrics (NaN left out) and the intervals logged with them."""
    means = {
        k: v
        for k, v in metrics.items()
        if k not in RUN_METRICS
        and not k.startswith(ROUTED)
        and not k.endswith((CI_LOW, CI_HIGH))
        and not math.isnan(v)
    }
    intervals = {
        k: Interval(metrics[f"{k}{CI_LOW}"], metrics[f"{k}{CI_HIGH}"])
        for k in means
        if f"{k}{CI_LOW}" in metrics and f"{k}{CI_HIGH}" in metrics
    }
    return means, intervals


def comparisons(metrics: dict[str, float]) -> dict[tuple[str, str, str], Comparison]:
    """The comparisons of routing modes logged on a parent run, by (a, b, metric)."""
    parts: dict[tuple[str, str, str], dict[str, float]] = {}
    for key, value in metrics.items():
        match = COMPARISON_METRIC.fullmatch(key)
        if match:
            parts.setdefault((match["a"], match["b"], match["metric"]), {})[match["part"]] = value
    out = {}
    for (a, b, metric), got in sorted(parts.items()):
        low, high = got.get(f"{DIFF}{CI_LOW}"), got.get(f"{DIFF}{CI_HIGH}")
        out[(a, b, metric)] = Comparison(
            a,
            b,
            metric,
            images=int(got.get(IMAGES, 0)),
            mean_diff=got.get(DIFF),
            interval=Interval(low, high) if low is not None and high is not None else None,
            p_wilcoxon=got.get(P_WILCOXON),
        )
    return out
