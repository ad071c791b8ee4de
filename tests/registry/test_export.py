"""``zoo export --format published``: a file the original DeMoE scripts load strictly and run the same."""

import pytest
import torch
from helpers import cli

from demoe.net import DeMoE, reference
from demoe.registry import build
from demoe.registry.checkpoints import CheckpointError

MODEL = "DeMoE-tiny-synth"  # shipped with its weights (zoo/weights/*.safetensors)


def published_load(path, kwargs: dict) -> DeMoE:
    """What the published inference.py and finetune.py do with a checkpoint: ``torch.load`` with
    ``weights_only=True``, take ``['params']``, ``load_state_dict(strict=True)`` into the published
    architecture (DeMoE has its module tree: tests/net checks the keys against the published manifest)."""
    checkpoints = torch.load(path, map_location="cpu", weights_only=True)
    model = DeMoE(**kwargs)
    model.load_state_dict(checkpoints["params"], strict=True)
    return model.eval()


def assert_published_layout(path) -> dict:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert list(saved) == ["params"]
    assert all(type(v) is torch.Tensor and v.is_contiguous() for v in saved["params"].values())
    assert {v.dtype for v in saved["params"].values() if v.is_floating_point()} == {torch.float32}
    return saved["params"]


def assert_same_outputs(path, ours) -> None:
    """The published forward (demoe.net.reference) on the published-style load equals our zoo model."""
    theirs = published_load(path, ours.entry.kwargs)
    x = torch.rand(2, 3, 37, 45, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        for task in ("auto", "low_light"):
            expected = reference.forward(theirs, x, task)
            got = ours.model(x, task=task)
            scale = max(1.0, expected["output"].abs().max().item())
            assert (got["output"] - expected["output"]).abs().max().item() <= 1e-5 * scale
            assert torch.allclose(got["pred_labels"], expected["pred_labels"], atol=1e-6)


def test_export_writes_the_published_layout_that_loads_strictly_and_runs_the_same(tmp_path):
    out = tmp_path / "exported" / "tiny.pt"
    loaded = build.export_weights(MODEL, out)
    params = assert_published_layout(out)
    assert params.keys() == loaded.model.state_dict().keys()
    assert list(tmp_path.rglob(".*tmp")) == []
    assert_same_outputs(out, build.load_model(MODEL))


def test_export_refuses_a_safetensors_name_a_folder_and_its_own_source(tmp_path):
    with pytest.raises(CheckpointError, match=r"x\.safetensors: the published layout is a torch.save file"):
        build.export_weights(MODEL, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="is a folder"):
        build.export_weights(MODEL, tmp_path)
    first = build.export_weights(MODEL, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="is the checkpoint being exported"):
        build.export_weights(MODEL, tmp_path / "a.pt", checkpoint=tmp_path / "a.pt")
    assert first.checkpoint.suffix == ".safetensors"


def test_zoo_export_cli_chooses_params_ema_and_says_what_it_wrote(tmp_path, fixtures_dir):
    tiny = torch.load(fixtures_dir / "tiny_a.pt", weights_only=True)["params"]
    ema = {k: v * 0.5 if v.is_floating_point() else v for k, v in tiny.items()}
    torch.save({"params": tiny, "params_ema": ema}, tmp_path / "basicsr.pth")
    out = tmp_path / "published.pt"
    done = cli(
        "zoo",
        "export",
        "DeMoE-tiny",
        "--checkpoint",
        str(tmp_path / "basicsr.pth"),
        "--param-key",
        "params_ema",
        "--format",
        "published",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert f"[params_ema] -> {out} (published" in done.stdout
    params = assert_published_layout(out)
    assert all(torch.equal(params[k], ema[k]) for k in ema)

    refused = cli("zoo", "export", MODEL, "--format", "published", str(tmp_path / "w.safetensors"))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert len(lines) == 1 and lines[0].startswith(f"Error: {tmp_path / 'w.safetensors'}: the published")
