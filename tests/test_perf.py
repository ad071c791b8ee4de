"""``demoe-eval perf`` runs end to end at tiny sizes and compares like with like (not a timed test)."""

import json
import subprocess
import sys

import pytest
import torch

from demoe.perf.networks import dense_of_path, seeded_network
from demoe.registry import zoo
from demoe.runner import inference
from demoe.vocab import TASKS

SMALL = zoo.get_entry("DeMoE-small").kwargs


def perf_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "demoe.cli", "perf", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.mark.parametrize("expert", [0, 3])
def test_dense_network_of_a_path_computes_what_demoe_computes_at_k1(expert):
    model = inference.prepare(seeded_network("DeMoE", SMALL, seed=0))
    dense = inference.prepare(dense_of_path(model, expert))
    x = torch.rand(2, 3, 48, 64)
    moe = inference.forward(model, x, task=TASKS[expert])["output"]
    assert torch.allclose(inference.forward(dense, x)["output"], moe, atol=1e-6)


@pytest.mark.slow
def test_quick_benchmark_writes_every_measurement(tmp_path):
    out = tmp_path / "perf.json"
    result = perf_cli("--quick", "--threads", "1", "--repeats", "1", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "reference ms" in result.stdout and "peak RSS GB" in result.stdout
    results = json.loads(out.read_text())
    rows = {(r["size"], r["batch"], r["k"]): r for r in results["forward"]}
    assert set(rows) == {(s, b, k) for s in (32, 64) for b in (1, 2) for k in (1, 2)}
    for row in rows.values():
        assert row["fp32_max_rel_diff"] <= 1e-5
        assert row["reference_ms"] > 0 and row["fp32_ms"] > 0 and row["bf16_ms"] > 0
    assert all("moe_overhead" in r for r in rows.values() if r["k"] == 1)
    assert [s["pixel_ratio"] for s in results["scaling"]] == [4.0] * 4
    large = results["large_image"]
    assert set(large) == {"two-pass", "one-pass"}
    assert large["two-pass"]["tiles"] == 6 and large["two-pass"]["peak_rss_bytes"] > 0
    assert results["environment"]["threads"] == 1
    pipeline = results["pipeline"]
    assert set(pipeline) == {"fp32", "bf16"}
    for r in pipeline.values():
        assert r["images"] == 3 and r["modes"] == ["identity", "auto"]
        assert 0 < r["pure_forward_seconds"] and r["loop_over_forward"] > 0
        assert r["evaluator_forward_seconds"] <= r["loop_seconds"]
        assert r["loop_over_own_forward"] == pytest.approx(r["loop_seconds"] / r["evaluator_forward_seconds"])
    quality = results["bf16_quality"]
    assert quality["model"] == "DeMoE-tiny-synth" and quality["images"] == 3
    assert abs(quality["psnr_change_db"]) < 0.5
    assert "loop / forward" in result.stdout and "change dB" in result.stdout
    training = results["training_step"]
    assert (training["batch"], training["crop"]) == (2, 32)
    assert training["contiguous_seconds"] > 0 and training["channels_last_seconds"] > 0
    assert training["speedup"] == pytest.approx(
        training["contiguous_seconds"] / training["channels_last_seconds"]
    )
    assert "channels_last s" in result.stdout


def test_bad_k_is_a_one_line_error(tmp_path):
    result = perf_cli("--quick", "--k", "9", "--out", str(tmp_path / "p.json"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: --k 9: must be between 1 and 5, the number of experts"
    ]
    assert not (tmp_path / "p.json").exists()


def test_sizes_must_be_integers(tmp_path):
    result = perf_cli("--sizes", "256,big", cwd=tmp_path)
    assert result.returncode == 2
    assert "expected comma-separated integers" in result.stderr


def test_quick_and_full_together_are_a_usage_error(tmp_path):
    result = perf_cli("--quick", "--full", cwd=tmp_path)
    assert result.returncode == 2 and "--quick and --full" in result.stderr
    assert not (tmp_path / "perf.json").exists()


def test_the_default_run_times_each_measurement_once_and_full_is_the_sweep():
    from demoe.perf import PerfConfig, full_config

    default, full = PerfConfig(), full_config(sizes=[256])
    assert (default.batches, default.repeats, default.pipeline_images) == ([1], 3, 10)
    assert (full.batches, full.repeats, full.pipeline_images, full.sizes) == ([1, 4], 5, 40, [256])
    assert default.large_image == full.large_image and default.precisions == full.precisions
