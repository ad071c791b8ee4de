"""Intervals and paired tests over images, with scipy: the bootstrap confidence interval of a mean
(``mean_interval``) and two sets of per-image scores compared image by image (``compare``: the mean
difference, its bootstrap interval, the Wilcoxon signed-rank p-value).

Every interval draws from a generator seeded afresh with ``Statistics.seed``, so an interval depends
only on its values and the settings, never on what was computed before it.
"""

import math
import warnings
from collections.abc import Iterable

import numpy as np

from demoe.records import Comparison, Interval, Statistics

BATCH = 1000  # resamples drawn at a time (memory: BATCH x images floats); part of what fixes the draws


def _finite(values: Iterable[float | None]) -> np.ndarray:
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return array[np.isfinite(array)]


def mean_interval(values: Iterable[float | None], statistics: Statistics) -> Interval | None:
    """The bootstrap confidence interval of the mean of ``values`` (missing values left out); None with
    fewer than 2 values."""
    from scipy.stats import bootstrap

    data = _finite(values)
    if len(data) < 2:
        return None
    result = bootstrap(
        (data,),
        np.mean,
        n_resamples=statistics.resamples,
        batch=BATCH,
        confidence_level=statistics.confidence,
        method=statistics.method,
        rng=np.random.default_rng(statistics.seed),
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return None if math.isnan(low) or math.isnan(high) else Interval(low, high)


def wilcoxon_p(differences: np.ndarray) -> tuple[float | None, str | None]:
    """The two-sided Wilcoxon signed-rank p-value of ``differences``, or None and why it is not available."""
    from scipy.stats import wilcoxon

    if len(differences) < 2:
        return None, "fewer than 2 paired images"
    if not np.any(differences):
        return None, "every paired difference is zero"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(wilcoxon(differences, zero_method="wilcox", alternative="two-sided").pvalue)
    return (None, "the test is undefined for these differences") if math.isnan(p) else (p, None)


def compare(
    a: str, b: str, metric: str, pairs: Iterable[tuple[float | None, float | None]], statistics: Statistics
) -> Comparison:
    """``a`` against ``b`` on ``pairs`` (one per image: a's value, b's value); images missing either value
    are left out."""
    both = np.array(
        [
            (x, y)
            for x, y in pairs
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
        ],
        dtype=np.float64,
    ).reshape(-1, 2)
    differences = both[:, 0] - both[:, 1]
    if len(differences) == 0:
        return Comparison(a, b, metric, 0, None, why_not="no image has both values")
    p, why_not = wilcoxon_p(differences)
    interval = mean_interval(differences, statistics)
    if interval is None and why_not is None:
        why_not = "no interval for these differences"
    return Comparison(
        a,
        b,
        metric,
        images=len(differences),
        mean_diff=float(np.mean(differences)),
        interval=interval,
        p_wilcoxon=p,
        why_not=why_not,
    )
