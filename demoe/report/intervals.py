"""The report's means with their confidence intervals: as logged with each routing mode, or made from a
per-image column with the same seeded bootstrap (``demoe.metrics.stats``), and the note that says what
a cell ``value [low, high]`` is."""

from demoe.metrics.stats import mean_interval
from demoe.records import Statistics
from demoe.report.collect import EvalRun, ModeResult
from demoe.report.formats import Estimate


def estimate(result: ModeResult | None, metric: str) -> Estimate | float | None:
    """A mode's mean of ``metric`` with its logged interval (the mean alone where none was logged)."""
    value = result.metrics.get(metric) if result is not None else None
    interval = result.intervals.get(metric) if result is not None and value is not None else None
    return value if interval is None else Estimate(value, interval.low, interval.high)


def column_estimate(rows, metric: str, statistics: Statistics) -> Estimate | float | None:
    """The mean of a per-image column (pandas) with its bootstrap interval (the mean alone below 2 values)."""
    if metric not in rows.columns or rows.empty:
        return None
    values = rows[metric].dropna()
    if not len(values):
        return None
    interval = mean_interval(values.tolist(), statistics)
    mean = float(values.mean())
    return mean if interval is None else Estimate(mean, interval.low, interval.high)


def interval_note(runs: list[EvalRun], what: str = "the mean over images") -> str:
    """What a cell ``value [low, high]`` is, with the statistics' settings of ``runs``."""
    settings = sorted({r.statistics.describe() for r in runs if r.statistics is not None})
    return (
        f"value [low, high]: {what} and its "
        + ("; ".join(settings) if settings else Statistics().describe())
        + "; a value alone: no interval (fewer than 2 images, or a run logged without intervals)."
    )
