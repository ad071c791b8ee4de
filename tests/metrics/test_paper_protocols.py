"""PSNR and SSIM of BasicSR's and MATLAB's convention (the Y of BT.601 YCbCr) beside pyiqa's own (the Y of
YIQ), held to values computed here independently, and the benchmark manifests' paper_protocol."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.ndimage import gaussian_filter
from skimage.data import astronaut, chelsea
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from demoe.metrics.scorers import MetricSet, Protocol
from demoe.registry.benchmarks import PAPER_PROTOCOLS, BenchmarkError, parse_spec

SHIPPED = Path(__file__).resolve().parents[2] / "benchmarks"
MATLAB_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)


def bt601_y(rgb8: np.ndarray) -> np.ndarray:
    """The Y of BT.601 YCbCr, studio range: 16 + 65.481 R + 128.553 G + 24.966 B on [0, 1] RGB, in 0..255."""
    rgb = rgb8.astype(np.float64) / 255
    return 16 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


def pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Fixed 8-bit (restored, sharp) pairs: a noisy photo, a blurred one, a dark noisy one, and one whose
    detail is inverted (negative contrast-structure terms, which pyiqa's SSIM would clamp to 0)."""
    rng = np.random.default_rng(7)
    face, cat = astronaut()[40:136, 180:292], chelsea()[60:140, 100:196]
    noisy = np.clip(face + rng.normal(0, 8, face.shape), 0, 255).round().astype(np.uint8)
    blurred = np.clip(gaussian_filter(cat.astype(np.float64), (1.2, 1.2, 0)), 0, 255).round().astype(np.uint8)
    dark = (cat // 4).astype(np.uint8)
    dark_noisy = np.clip(dark + rng.normal(0, 3, dark.shape), 0, 255).round().astype(np.uint8)
    smooth = gaussian_filter(face.astype(np.float64), (2, 2, 0))
    inverted = np.clip(2 * smooth - face, 0, 255).round().astype(np.uint8)
    return [
        ("noisy", noisy, face),
        ("blurred", blurred, cat),
        ("dark", dark_noisy, dark),
        ("inverted", inverted, face),
    ]


def tensor(image8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image8).permute(2, 0, 1)[None].float() / 255


def crop(image: np.ndarray, border: int) -> np.ndarray:
    return image[border:-border, border:-border] if border else image


@pytest.mark.parametrize("border", [0, 4])
def test_ycbcr_psnr_and_ssim_equal_independent_bt601_values(tmp_path, border):
    names = ["psnry-ycbcr", "ssim-ycbcr", "psnry"]
    metrics = MetricSet(names, protocol=Protocol(crop_border=border), weights_dir=tmp_path)
    assert metrics.available == names
    for name, restored, sharp in pairs():
        scores = metrics(tensor(restored), tensor(sharp))
        y_restored, y_sharp = bt601_y(crop(restored, border)), bt601_y(crop(sharp, border))
        psnr = peak_signal_noise_ratio(y_sharp, y_restored, data_range=255)
        ssim = structural_similarity(y_sharp, y_restored, **MATLAB_SSIM)
        assert float(scores["psnry-ycbcr"][0]) == pytest.approx(psnr, abs=1e-3), name
        assert float(scores["ssim-ycbcr"][0]) == pytest.approx(ssim, abs=1e-6), name
        # BT.601's Y spans 219/255 of YIQ's, so pyiqa's own Y-PSNR is 20 log10(255/219) dB lower
        gap = float(scores["psnry-ycbcr"][0] - scores["psnry"][0])
        assert gap == pytest.approx(20 * math.log10(255 / 219), abs=2e-3), name


def test_the_rgb_protocols_columns_equal_basicsrs_rgb_psnr_and_ssim(tmp_path):
    metrics = MetricSet(list(PAPER_PROTOCOLS["rgb"]), weights_dir=tmp_path)
    for name, restored, sharp in pairs():
        scores = metrics(tensor(restored), tensor(sharp))
        channels = [
            structural_similarity(
                sharp[..., c].astype(np.float64), restored[..., c].astype(np.float64), **MATLAB_SSIM
            )
            for c in range(3)
        ]
        assert float(scores["psnr"][0]) == pytest.approx(peak_signal_noise_ratio(sharp, restored), abs=1e-3)
        if name != "inverted":  # pyiqa's ssimc clamps negative contrast-structure terms, BasicSR does not
            assert float(scores["ssimc"][0]) == pytest.approx(np.mean(channels), abs=1e-6), name


def test_every_column_records_its_channels(tmp_path):
    names = ["psnr", "ssimc", "ssim", "psnry", "psnry-ycbcr", "ssim-ycbcr", "gmsd"]
    assert MetricSet(names, weights_dir=tmp_path).colors() == {
        "psnr": "rgb",
        "ssimc": "rgb",
        "ssim": "y-yiq",
        "psnry": "y-yiq",
        "psnry-ycbcr": "y-ycbcr",
        "ssim-ycbcr": "y-ycbcr",
        "gmsd": "y-yiq",
    }
    luma = MetricSet(["psnr", "ssimc", "ssim-ycbcr"], protocol=Protocol(color="y"), weights_dir=tmp_path)
    assert luma.colors() == {"psnr": "y-yiq", "ssimc": "y-yiq", "ssim-ycbcr": "y-ycbcr"}
    for protocol, metrics in PAPER_PROTOCOLS.items():
        assert set(MetricSet(list(metrics), weights_dir=tmp_path).colors().values()) == {protocol}


MANIFEST = {"name": "mine", "root": "mine", "splits": {"test": {"pairs": None}}}


def test_every_shipped_manifest_names_its_papers_protocol():
    for path in sorted(SHIPPED.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert "paper_protocol" in data, f"{path.name} does not name paper_protocol"
        assert parse_spec(data, path).paper_protocol in (*PAPER_PROTOCOLS, None)
    assert parse_spec(yaml.safe_load((SHIPPED / "GoPro.yaml").read_text()), SHIPPED).paper_protocol == "rgb"
    assert parse_spec(dict(MANIFEST), Path("mine.yaml")).paper_protocol is None


@pytest.mark.parametrize("value", ["matlab", ["rgb"], 3])
def test_an_unknown_paper_protocol_is_a_one_line_error(value):
    with pytest.raises(BenchmarkError) as err:
        parse_spec({**MANIFEST, "paper_protocol": value}, Path("mine.yaml"))
    message = str(err.value)
    assert message.startswith(f"mine.yaml: paper_protocol {value!r} is unknown") and "\n" not in message
    assert "rgb, y-ycbcr, y-yiq" in message


def test_results_record_the_papers_protocol_and_each_columns_channels(tmp_path):
    from dataclasses import replace

    from helpers import tiny_eval_config, write_pairs

    from demoe.cli.run import paper_protocol_note
    from demoe.data.pairs import check, resolve
    from demoe.jobs.evaluate import evaluate
    from demoe.tracking.mlflow_runs import flat_params
    from demoe.tracking.results import read_results

    write_pairs(tmp_path / "data" / "mine", 2, np.random.default_rng(0))
    manifest = {**MANIFEST, "layout": {"blurred": "blur", "sharp": "sharp"}}
    for folder, extra in (("plain", {}), ("paper", {"paper_protocol": "y-ycbcr"})):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "mine.yaml").write_text(yaml.safe_dump({**manifest, **extra}))
    fingerprints = {
        check(resolve("mine", data_root=tmp_path / "data", bench_dirs=[tmp_path / f])).fingerprint
        for f in ("plain", "paper")
    }
    assert len(fingerprints) == 1, "the manifest key does not change the benchmark's fingerprint"

    cfg = tiny_eval_config(
        tmp_path, "mine", routing=["auto"], data_root=tmp_path / "data", bench_dirs=[tmp_path / "paper"]
    )
    result = evaluate(replace(cfg, metrics=["psnr", "psnry-ycbcr"]))
    assert read_results(tmp_path / "out").protocol == result.protocol
    assert result.protocol["paper_protocol"] == "y-ycbcr"
    assert result.protocol["metric_color"] == {"psnr": "rgb", "psnry-ycbcr": "y-ycbcr"}
    assert result.protocol["y_color_space"] == "yiq" and result.protocol["crop_border"] == 0
    logged = flat_params({"protocol": result.protocol})
    assert (
        logged["protocol.metric_color.psnry-ycbcr"] == "y-ycbcr"
        and logged["protocol.paper_protocol"] == "y-ycbcr"
    )
    note = paper_protocol_note(result)
    assert "mine's papers score PSNR and SSIM on y-ycbcr" in note
    assert "the columns to compare with them: psnry-ycbcr;" in note
    assert note.endswith("add --metrics psnr,psnry-ycbcr,ssim-ycbcr for ssim-ycbcr")


def test_report_notes_say_what_every_column_scored_and_which_compare_with_the_papers():
    from types import SimpleNamespace

    from demoe.report.protocols import channel_notes

    def run(bench: str, colors: dict, paper: str | None):
        protocol = {"color": "rgb", "metric_color": colors, "paper_protocol": paper}
        return SimpleNamespace(bench=bench, results=SimpleNamespace(protocol=protocol))

    rgb = {"psnr": "rgb", "ssimc": "rgb", "psnry-ycbcr": "y-ycbcr"}
    notes = channel_notes(
        [run("GoPro", rgb, "rgb"), run("Lab", {**rgb, "psnr": "y-yiq"}, "y-ycbcr"), run("aio", rgb, None)]
    )
    assert notes[0] == (
        "Channels scored: PSNR (dB) rgb (GoPro, aio), y-yiq (Lab); SSIM rgb; PSNR-Y YCbCr (dB) y-ycbcr "
        "(rgb: the RGB images; y-ycbcr: the Y of BT.601 YCbCr, BasicSR's and MATLAB's; "
        "y-yiq: the Y of YIQ, pyiqa's)."
    )
    assert notes[1:] == [
        "GoPro: its papers score PSNR and SSIM on rgb (the RGB images); "
        "the columns to compare: PSNR (dB), SSIM.",
        "Lab: its papers score PSNR and SSIM on y-ycbcr (the Y of BT.601 YCbCr, BasicSR's and MATLAB's); "
        "the columns to compare: PSNR-Y YCbCr (dB).",
    ]
    assert channel_notes([SimpleNamespace(bench="old", results=None)]) == []


def test_bench_show_prints_the_papers_protocol():
    from helpers import cli

    done = cli("bench", "show", "GoPro")
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["paper_protocol"] == "rgb"
