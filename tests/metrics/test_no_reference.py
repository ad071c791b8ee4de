"""No-reference metrics for images without sharp ones: which run offline, what they score, and what a
full-reference metric asked for on such images becomes."""

import pytest
import torch

from demoe.metrics.scorers import NEEDS_SHARP, MetricError, MetricSet, availability
from demoe.metrics.weights import pyiqa_files


@pytest.fixture
def empty_torch_home(tmp_path):
    return tmp_path / "torch"


def smooth_images(batch: int = 2, side: int = 48) -> torch.Tensor:
    torch.manual_seed(0)
    coarse = torch.rand(batch, 3, side // 8, side // 8)
    return torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic").clamp(0, 1)


def test_piqe_runs_offline_and_scores_as_pyiqa_does(empty_torch_home):
    import pyiqa

    metrics = MetricSet(["piqe"], weights_dir=empty_torch_home, reference=False)
    assert metrics.available == ["piqe"] and metrics.lower_better("piqe")
    noisy = (smooth_images() + 0.1 * torch.randn(2, 3, 48, 48)).clamp(0, 1)
    quantized = torch.round(noisy * 255) / 255
    expected = pyiqa.create_metric("piqe", device="cpu", as_loss=False)(quantized)
    scores = metrics(noisy)
    assert set(scores) == {"piqe"} and scores["piqe"].shape == (2,)
    assert scores["piqe"].tolist() == pytest.approx(expected.tolist(), abs=1e-4)


def test_niqe_and_brisque_need_pyiqas_files_and_say_which(empty_torch_home):
    metrics = MetricSet(["niqe", "brisque", "piqe"], weights_dir=empty_torch_home, reference=False)
    assert metrics.available == ["piqe"]
    for name, file in (("niqe", "niqe_modelparameters.mat"), ("brisque", "brisque_svm_weights.pth")):
        reason = metrics.unavailable[name]
        assert str(empty_torch_home / "hub" / "pyiqa" / file) in reason and "--allow-download" in reason
    niqe = pyiqa_files(empty_torch_home, "niqe")[0]
    niqe.parent.mkdir(parents=True)
    niqe.write_bytes(b"")  # where pyiqa looks for it: with the file there, niqe counts as runnable
    assert availability(["niqe"], weights_dir=empty_torch_home)["niqe"].available


def test_full_reference_metrics_on_images_without_sharp_ones_are_unavailable_not_errors(empty_torch_home):
    metrics = MetricSet(["psnr", "lpips", "piqe"], weights_dir=empty_torch_home, reference=False)
    assert metrics.available == ["piqe"]
    assert metrics.unavailable == {"psnr": NEEDS_SHARP, "lpips": NEEDS_SHARP}
    assert set(metrics(smooth_images())) == {"piqe"}


def test_pairs_are_still_scored_with_full_reference_metrics_only(empty_torch_home):
    with pytest.raises(MetricError, match="'piqe' is a no-reference pyiqa metric"):
        MetricSet(["psnr", "piqe"], weights_dir=empty_torch_home)
    with pytest.raises(MetricError, match="need the sharp images"):
        MetricSet(["psnr"], weights_dir=empty_torch_home)(smooth_images())
