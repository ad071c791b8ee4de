"""What an evaluation on images without sharp ones adds to results.json and MLflow's metrics, and what
it leaves as it was for benchmarks with pairs."""

from demoe.records import BenchInfo, ModeSummary
from demoe.tracking.run_metrics import means_and_intervals, mode_metrics


def test_bench_info_says_unpaired_only_where_it_is():
    paired = BenchInfo(root="/data/GoPro", pairs=2, fingerprint="abc")
    assert "unpaired" not in paired.to_json()  # results.json of a paired benchmark as before
    unpaired = BenchInfo(root="/data/captures", pairs=3, fingerprint="def", unpaired=True)
    assert unpaired.to_json()["unpaired"] is True
    assert BenchInfo(**unpaired.to_json()) == unpaired


def test_the_routers_choices_round_trip_and_stay_out_of_the_quality_metrics():
    summary = ModeSummary(images=3, metrics={"piqe": 40.0}, decisions={"defocus": 2, "low_light": 1})
    assert ModeSummary.from_json(summary.to_json()) == summary
    assert "decisions" not in ModeSummary(images=3, metrics={"psnr": 30.0}).to_json()
    logged = mode_metrics(summary)
    assert logged["routed_defocus"] == 2 and logged["routed_low_light"] == 1
    means, _ = means_and_intervals(logged)
    assert means == {"piqe": 40.0}  # read back, the counts are no metric column
