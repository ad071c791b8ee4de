import importlib.metadata
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.data import astronaut
from skimage.metrics import peak_signal_noise_ratio

from demoe.metrics.lpips_fetch import PYIQA_CALIBRATION, WeightsFetchError, fetch_lpips
from demoe.metrics.scorers import MetricError, MetricSet, Protocol, SeparableFloat64Filters, availability
from demoe.metrics.weights import LPIPS_NETS, lpips_files

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOWNLOADS = Path.home() / ".cache" / "demoe-test-downloads"
PERFECT_PSNR = 80.0  # pyiqa's PSNR of identical images: 10 log10(1 / 1e-8)


@pytest.fixture(scope="module")
def empty_torch_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("torch_home")


@pytest.fixture(scope="module")
def metric_set(empty_torch_home) -> MetricSet:
    return MetricSet(["psnr", "ssimc", "psnry"], weights_dir=empty_torch_home)


def photo(size: int = 48) -> torch.Tensor:
    return torch.from_numpy(astronaut()[100 : 100 + size, 150 : 150 + size].copy()).permute(2, 0, 1)[None]


def noisy(sharp: torch.Tensor, sigma: float = 0.05, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (sharp + sigma * torch.randn(sharp.shape, generator=generator)).clamp(0, 1)


def to_hwc(image: torch.Tensor) -> np.ndarray:
    return image[0].permute(1, 2, 0).numpy()


def test_psnr_equals_skimage_on_an_8bit_pair(metric_set):
    sharp8 = photo()
    restored8 = (noisy(sharp8.float() / 255) * 255).round().to(torch.uint8)
    scores = metric_set(restored8.float() / 255, sharp8.float() / 255)
    expected = peak_signal_noise_ratio(to_hwc(sharp8), to_hwc(restored8), data_range=255)
    assert scores["psnr"].shape == (1,)
    assert abs(float(scores["psnr"][0]) - expected) < 1e-3


def test_scores_are_per_image(metric_set):
    sharp = photo().float() / 255
    batch = torch.cat([noisy(sharp, 0.02), noisy(sharp, 0.1)])
    scores = metric_set(batch, sharp.expand(2, -1, -1, -1))
    assert set(scores) == {"psnr", "ssimc", "psnry"}
    assert scores["psnr"].shape == (2,) and scores["psnr"].dtype == torch.float64
    assert scores["psnr"][0] > scores["psnr"][1] + 5
    assert scores["ssimc"][0] > scores["ssimc"][1]


def test_crop_border_ignores_a_damaged_frame(empty_torch_home):
    sharp = photo().float() / 255
    restored = sharp.clone()
    restored[..., :3, :] = 0
    restored[..., :, -3:] = 1
    names = ["psnr", "ssimc", "gmsd"]
    full = MetricSet(names, weights_dir=empty_torch_home)(restored, sharp)
    cropped = MetricSet(names, protocol=Protocol(crop_border=3), weights_dir=empty_torch_home)(
        restored, sharp
    )
    assert full["psnr"][0] < 20 and cropped["psnr"][0] == pytest.approx(PERFECT_PSNR)
    assert full["ssimc"][0] < 0.99 and cropped["ssimc"][0] == pytest.approx(1.0)
    assert full["gmsd"][0] > 0.01 and cropped["gmsd"][0] == pytest.approx(0.0, abs=1e-6)


def test_y_protocol_ignores_a_colour_shift_that_keeps_luma(empty_torch_home):
    sharp = 0.2 + 0.6 * photo().float() / 255
    shift = 0.05 * torch.tensor([0.587, -0.299, 0.0]).view(1, 3, 1, 1)  # orthogonal to YIQ's Y weights
    restored = sharp + shift
    rgb = MetricSet(["psnr"], protocol=Protocol(quantize_8bit=False), weights_dir=empty_torch_home)
    y = MetricSet(["psnr"], protocol=Protocol(color="y", quantize_8bit=False), weights_dir=empty_torch_home)
    assert rgb(restored, sharp)["psnr"][0] < 40
    assert y(restored, sharp)["psnr"][0] == pytest.approx(PERFECT_PSNR, abs=1e-3)


def test_y_protocol_psnr_is_pyiqas_y_channel_psnr(empty_torch_home, metric_set):
    sharp = photo().float() / 255
    restored = noisy(sharp)
    y = MetricSet(["psnr"], protocol=Protocol(color="y"), weights_dir=empty_torch_home)
    assert y(restored, sharp)["psnr"][0] == pytest.approx(float(metric_set(restored, sharp)["psnry"][0]))
    assert y.options["psnr"] == {"test_y_channel": True}


def test_quantisation_scores_what_a_saved_png_would_give(empty_torch_home):
    sharp = photo().float() / 255
    restored = noisy(sharp)
    quantized = MetricSet(["psnr"], weights_dir=empty_torch_home)
    exact = MetricSet(["psnr"], protocol=Protocol(quantize_8bit=False), weights_dir=empty_torch_home)
    saved = (restored * 255).round().to(torch.uint8)
    expected = peak_signal_noise_ratio(to_hwc(photo()), to_hwc(saved), data_range=255)
    assert float(quantized(restored, sharp)["psnr"][0]) == pytest.approx(expected, abs=1e-3)
    sub_step = (sharp + 0.3 / 255).clamp(0, 1)
    assert quantized(sub_step, sharp)["psnr"][0] == pytest.approx(PERFECT_PSNR)
    assert exact(sub_step, sharp)["psnr"][0] < 60


def test_crop_border_larger_than_the_image_is_an_error(empty_torch_home):
    metrics = MetricSet(["psnr"], protocol=Protocol(crop_border=24), weights_dir=empty_torch_home)
    sharp = photo().float() / 255
    with pytest.raises(MetricError, match="crop_border 24"):
        metrics(sharp, sharp)


def test_lpips_is_unavailable_in_an_empty_torch_home(empty_torch_home):
    status = availability(["psnr", "lpips"], weights_dir=empty_torch_home)
    assert status["psnr"].available
    lpips = status["lpips"]
    backbone = empty_torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    linear = empty_torch_home / "hub" / "pyiqa" / "LPIPS_v0.1_alex-df73285e.pth"
    assert not lpips.available and lpips.lower_better
    assert lpips.files == [backbone, linear]
    assert str(backbone) in lpips.message and str(linear) in lpips.message
    assert "demoe-eval metrics fetch lpips" in lpips.message


def test_metric_set_skips_lpips_without_weights_and_says_why(empty_torch_home):
    metrics = MetricSet(["psnr", "lpips"], weights_dir=empty_torch_home)
    assert metrics.available == ["psnr"]
    assert "alexnet-owt-7be5be79.pth" in metrics.unavailable["lpips"]
    assert metrics.lower_better("lpips") and not metrics.lower_better("psnr")
    sharp = photo().float() / 255
    assert set(metrics(sharp, sharp)) == {"psnr"}


def test_a_linear_file_without_lpips_layers_is_not_used(tmp_path):
    backbone, linear = lpips_files(tmp_path, "alex")
    backbone.parent.mkdir(parents=True)
    linear.parent.mkdir(parents=True)
    torch.save({}, backbone)
    torch.save({"lin0.weight": torch.zeros(1, 64, 1, 1)}, linear)
    status = availability(["lpips"], weights_dir=tmp_path)["lpips"]
    assert not status.available
    assert str(linear) in status.message and "lin0" in status.message


def test_unknown_and_no_reference_metrics_are_errors(empty_torch_home):
    with pytest.raises(MetricError, match="did you mean.*psnr"):
        availability(["psnrr"], weights_dir=empty_torch_home)
    with pytest.raises(MetricError, match="no-reference"):
        MetricSet(["niqe"], weights_dir=empty_torch_home)


def test_protocol_is_validated_and_recorded():
    with pytest.raises(MetricError, match="color 'ycbcr'"):
        Protocol(color="ycbcr")
    with pytest.raises(MetricError, match="crop_border -1"):
        Protocol(crop_border=-1)
    assert Protocol(color="y", crop_border=4).to_dict() == {
        "color": "y",
        "y_color_space": "yiq",
        "crop_border": 4,
        "quantize_8bit": True,
        "pyiqa_version": importlib.metadata.version("pyiqa"),
    }


def test_lpips_file_names_are_the_ones_torchvision_and_pyiqa_read(metric_set):
    from pyiqa.archs.lpips_arch import default_model_urls
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    assert AlexNet_Weights.IMAGENET1K_V1.url.endswith("/" + LPIPS_NETS["alex"].backbone_file)
    assert VGG16_Weights.IMAGENET1K_V1.url.endswith("/" + LPIPS_NETS["vgg"].backbone_file)
    assert default_model_urls["0.1_alex"].endswith("/" + LPIPS_NETS["alex"].linear_file)
    assert default_model_urls["0.1_vgg"].endswith("/" + LPIPS_NETS["vgg"].linear_file)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "demoe.cli", *args], capture_output=True, text=True, cwd=PROJECT_ROOT
    )


def test_metrics_check_cli_names_the_missing_files(tmp_path):
    done = run_cli("metrics", "check", "--metrics", "psnr,lpips", "--weights-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[2:4]}
    assert rows["psnr"][1:3] == ["higher", "available"]
    assert rows["lpips"][1:3] == ["lower", "unavailable"]
    assert str(tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in done.stdout


def calibration_pairs() -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """pyiqa's calibration pairs and published lpips values, read straight from its source archive."""
    from PIL import Image

    root = "pyiqa-0.1.16/ResultsCalibra"
    with tarfile.open(DOWNLOADS / PYIQA_CALIBRATION.filename) as tar:
        rows = [
            line.split(",")
            for line in tar.extractfile(f"{root}/results_official.csv").read().decode().split()
        ]
        header = rows[0][1:]
        published = [float(v) for v in next(r for r in rows if r[0] == "lpips")[1:]]

        def load(folder: str) -> torch.Tensor:
            images = [Image.open(io.BytesIO(tar.extractfile(f"{root}/{folder}/{n}").read())) for n in header]
            return torch.stack([torch.from_numpy(np.asarray(i.convert("RGB")).copy()) for i in images])

        return (
            load("dist_dir").permute(0, 3, 1, 2) / 255,
            load("ref_dir").permute(0, 3, 1, 2) / 255,
            published,
        )


@pytest.mark.slow
def test_fetch_lpips_cli_makes_lpips_real(tmp_path):
    weights = tmp_path / "torch"
    done = run_cli(
        "metrics", "fetch", "lpips", "--weights-dir", str(weights), "--download-dir", str(DOWNLOADS)
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(": match") == 2
    assert all(p.is_file() for net in LPIPS_NETS for p in lpips_files(weights, net))
    assert all(s.available for s in availability(["lpips", "lpips-vgg"], weights_dir=weights).values())

    metrics = MetricSet(["lpips", "lpips-vgg"], weights_dir=weights)
    assert metrics.available == ["lpips", "lpips-vgg"]
    sharp = photo(64).float() / 255
    same = metrics(sharp, sharp)
    assert same["lpips"][0] == pytest.approx(0.0, abs=1e-6)
    assert same["lpips-vgg"][0] == pytest.approx(0.0, abs=1e-6)
    distorted, reference, published = calibration_pairs()
    lpips_only = MetricSet(["lpips"], weights_dir=weights)
    assert lpips_only(distorted, reference)["lpips"].tolist() == pytest.approx(published, abs=1e-4)


@pytest.mark.slow
def test_fetch_deletes_what_it_wrote_when_lpips_is_not_reproduced(tmp_path):
    backbone, linear = lpips_files(tmp_path, "alex")
    linear.parent.mkdir(parents=True)
    torch.save(
        {f"lin{i}.model.1.weight": torch.ones(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))},
        linear,
    )
    with pytest.raises(WeightsFetchError, match="does not reproduce") as error:
        fetch_lpips(tmp_path, progress=False, download_dir=DOWNLOADS)
    assert str(linear) in str(error.value)
    assert linear.is_file() and not backbone.exists()
    assert not any(p.exists() for p in lpips_files(tmp_path, "vgg"))


def test_ssim_with_separable_filters_equals_pyiqas_direct_convolution(empty_torch_home):
    metrics = MetricSet(["ssimc", "ssim"], weights_dir=empty_torch_home)
    sharp = photo(96).float() / 255
    restored = (noisy(sharp, sigma=0.1) * 255).round() / 255  # on the 8-bit grid: unchanged by the protocol
    fast = metrics(restored, sharp)
    for name, metric in metrics._metrics.items():
        with torch.no_grad():
            direct = metric(restored, sharp).double().reshape(-1)
        assert abs(float(fast[name][0]) - float(direct[0])) < 1e-9, name


def test_separable_filters_leave_other_convolutions_alone():
    x = torch.rand(1, 3, 20, 20, dtype=torch.float64)
    not_separable = torch.rand(3, 1, 5, 5, dtype=torch.float64)
    with SeparableFloat64Filters():
        out = torch.nn.functional.conv2d(x, not_separable, groups=3)
    assert torch.equal(out, torch.nn.functional.conv2d(x, not_separable, groups=3))
    column, row = torch.rand(3, 1, 5, 1, dtype=torch.float64), torch.rand(3, 1, 1, 5, dtype=torch.float64)
    separable = column * row
    with SeparableFloat64Filters():
        fast = torch.nn.functional.conv2d(x, separable, groups=3)
    assert torch.allclose(fast, torch.nn.functional.conv2d(x, separable, groups=3), rtol=1e-12, atol=0)
