"""results.json: what an evaluation writes reads back the same, and older files still read."""

import json

from demoe.records import (
    BenchInfo,
    Comparison,
    EvalResult,
    Interval,
    ModelInfo,
    ModeSummary,
    Statistics,
    Timing,
)


def result() -> EvalResult:
    return EvalResult(
        run_name="M@B",
        model="M",
        bench="B",
        split="test",
        routing_modes=["identity", "auto", "oracle"],
        model_info=ModelInfo("DeMoE", {"k_used": 1}, "m.pt", "ab" * 32, 1000),
        bench_info=BenchInfo("/data/B", 3, "f" * 64, task="defocus"),
        protocol={"color": "rgb"},
        metrics_unavailable={"lpips": "no weights"},
        results={
            "identity": ModeSummary(3, {"psnr": 20.0}, intervals={"psnr": Interval(19.0, 21.0)}),
            "auto": ModeSummary(3, {"psnr": 25.0}, 0.25, 2 / 3, intervals={"psnr": Interval(24.0, 26.5)}),
            "oracle": ModeSummary(3, {"psnr": 25.5}, 0.5),
        },
        timing=Timing(1.0, 2.0, 0.75, 1, "cpu", 1, 0),
        config={"model": "M"},
        versions={"python": "3.11"},
        statistics=Statistics(),
        comparisons=[
            Comparison("auto", "oracle", "psnr", 3, -0.5, Interval(-1.0, 0.1), 0.25),
            Comparison("auto", "identity", "psnr", 1, 5.0, why_not="fewer than 2 paired images"),
        ],
    )


def test_results_json_reads_back_as_it_was_written():
    written = result()
    text = json.dumps(written.to_json(), indent=1, sort_keys=True)
    assert EvalResult.from_json(json.loads(text)) == written


def test_every_clock_reading_is_in_timing_and_nowhere_else():
    data = result().to_json()
    assert data["timing"]["seconds_per_image"] == {"auto": 0.25, "oracle": 0.5}
    assert "seconds" not in json.dumps({k: v for k, v in data.items() if k != "timing"})
    assert data["statistics"] == {
        "confidence": 0.95,
        "resamples": 10000,
        "method": "percentile",
        "seed": 0,
        "paired_test": "wilcoxon signed-rank, two-sided, zero differences dropped",
    }
    assert data["comparisons"][0] == {
        "a": "auto",
        "b": "oracle",
        "metric": "psnr",
        "images": 3,
        "mean_diff": -0.5,
        "interval": [-1.0, 0.1],
        "p_wilcoxon": 0.25,
    }


def test_an_older_results_json_without_intervals_reads_with_its_seconds_per_image():
    data = result().to_json()
    for mode, seconds in data["timing"].pop("seconds_per_image").items():
        data["results"][mode]["seconds_per_image"] = seconds
    for summary in data["results"].values():
        summary.pop("intervals", None)
    del data["statistics"], data["comparisons"]
    old = EvalResult.from_json(data)
    assert old.results["auto"].seconds_per_image == 0.25 and old.results["identity"].seconds_per_image is None
    assert old.statistics is None and old.comparisons == [] and old.results["auto"].intervals == {}
    again = old.to_json()
    assert "statistics" not in again and "comparisons" not in again
    assert "intervals" not in again["results"]["auto"]
