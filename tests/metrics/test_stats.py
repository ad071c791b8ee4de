"""Intervals and paired tests over images, against scipy on a small hand-made table."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from demoe.metrics.stats import compare, mean_interval
from demoe.metrics.summary import compare_modes, summarize
from demoe.records import ImageRecord, Statistics

# PSNR of six images under two routing modes (made up, not measured)
AUTO = [24.10, 22.35, 27.80, 19.95, 25.40, 23.05]
ORACLE = [23.60, 22.40, 26.90, 19.10, 25.45, 21.85]


def scipy_interval(values, statistics: Statistics) -> tuple[float, float]:
    result = scipy_stats.bootstrap(
        (np.asarray(values, dtype=np.float64),),
        np.mean,
        n_resamples=statistics.resamples,
        confidence_level=statistics.confidence,
        method=statistics.method,
        batch=1000,
        rng=np.random.default_rng(statistics.seed),
    )
    return result.confidence_interval.low, result.confidence_interval.high


def test_the_interval_of_a_mean_is_scipys_percentile_bootstrap_with_the_recorded_seed():
    statistics = Statistics()
    assert (statistics.method, statistics.resamples, statistics.seed) == ("percentile", 10000, 0)
    interval = mean_interval(AUTO, statistics)
    low, high = scipy_interval(AUTO, statistics)
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=1e-12)
    assert interval.low < np.mean(AUTO) < interval.high
    assert mean_interval([*AUTO, None, float("nan")], statistics) == interval, "missing values left out"
    assert mean_interval(AUTO, statistics) == interval, "each interval draws from a fresh generator"
    other = mean_interval(AUTO, Statistics(seed=1))
    assert other != interval and other.low == pytest.approx(interval.low, abs=0.5)
    assert mean_interval([21.0], statistics) is None and mean_interval([], statistics) is None


def test_a_paired_comparison_is_the_mean_difference_its_bootstrap_interval_and_wilcoxons_p():
    statistics = Statistics()
    result = compare("auto", "oracle", "psnr", zip(AUTO, ORACLE, strict=True), statistics)
    differences = np.subtract(AUTO, ORACLE)
    assert result.images == 6 and result.name == "auto_vs_oracle"
    assert result.mean_diff == pytest.approx(differences.mean(), abs=1e-12)
    low, high = scipy_interval(differences, statistics)
    assert (result.interval.low, result.interval.high) == pytest.approx((low, high), abs=1e-12)
    assert result.p_wilcoxon == pytest.approx(scipy_stats.wilcoxon(differences).pvalue, abs=1e-12)
    assert result.why_not is None
    # five images, every difference positive and distinct: the exact two-sided p is 2 / 2**5
    exact = compare(
        "a", "b", "psnr", [(x + d, x) for x, d in zip(AUTO, (1, 2, 3, 4, 5), strict=False)], statistics
    )
    assert exact.p_wilcoxon == pytest.approx(0.0625, abs=1e-12)


def test_paired_tests_that_cannot_be_made_are_not_available_never_an_error():
    statistics = Statistics()
    same = compare("a", "b", "psnr", [(v, v) for v in AUTO], statistics)
    assert same.images == 6 and same.mean_diff == 0.0
    assert same.p_wilcoxon is None and same.why_not == "every paired difference is zero"
    assert (same.interval.low, same.interval.high) == (0.0, 0.0)
    one = compare("a", "b", "psnr", [(21.0, 20.0), (None, 19.0), (float("nan"), 3.0)], statistics)
    assert one.images == 1 and one.mean_diff == 1.0
    assert one.interval is None and one.p_wilcoxon is None and one.why_not == "fewer than 2 paired images"
    none = compare("a", "b", "psnr", [(None, 20.0)], statistics)
    assert none.images == 0 and none.mean_diff is None and none.p_wilcoxon is None


def test_the_summary_of_an_evaluation_carries_intervals_and_compares_modes_image_by_image():
    statistics = Statistics()
    records = [
        ImageRecord(mode, f"img{i}", "defocus", 0.0, {"psnr": value})
        for mode, values in (("auto", AUTO), ("oracle", ORACLE), ("identity", [v - 5 for v in ORACLE]))
        for i, value in enumerate(values)
    ]
    summary = summarize(records, ["psnr", "lpips"], None, statistics)
    assert summary["auto"].intervals["psnr"] == mean_interval(AUTO, statistics)
    assert set(summary["auto"].intervals) == {"psnr"}, "no interval for a metric that was not scored"
    assert summarize(records, ["psnr"], None)["auto"].intervals == {}, "none unless asked (validation)"
    comparisons = compare_modes(records, ["psnr", "lpips"], statistics)
    assert [(c.a, c.b, c.metric) for c in comparisons] == [
        ("auto", "oracle", "psnr"),
        ("auto", "identity", "psnr"),
        ("oracle", "identity", "psnr"),
    ]
    assert comparisons[0] == compare("auto", "oracle", "psnr", zip(AUTO, ORACLE, strict=True), statistics)
    assert comparisons[2].mean_diff == pytest.approx(5.0)
