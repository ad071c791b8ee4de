"""An evaluation of images without sharp ones, in process: no-reference scores, the floor of the blurred
input, strips, and full-reference metrics asked for reported as not computable."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import tiny_eval_config
from PIL import Image, ImageFilter


def write_captures(folder, count: int, width: int = 40, height: int = 32) -> None:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    for i in range(count):
        coarse = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        scene = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        scene.filter(ImageFilter.GaussianBlur(1.0)).save(folder / f"shot{i}.png")


def test_captures_asked_for_psnr_get_piqe_a_floor_strips_and_one_line_on_psnr(tmp_path, capsys):
    import pyiqa

    from demoe.cli.run import print_result
    from demoe.data.images import read_image
    from demoe.jobs.evaluate import evaluate
    from demoe.metrics.scorers import NEEDS_SHARP

    write_captures(tmp_path / "captures" / "blur", 2)
    cfg = tiny_eval_config(
        tmp_path, str(tmp_path / "captures"), routing=["auto", "defocus"], weights_dir=tmp_path / "none"
    )
    result = evaluate(replace(cfg, metrics=["psnr", "lpips", "piqe"]))

    assert result.bench_info.unpaired and result.bench_info.pairs == 2
    assert result.metrics_unavailable == {"psnr": NEEDS_SHARP, "lpips": NEEDS_SHARP}
    assert result.routing_modes == ["identity", "auto", "defocus"]
    assert all(set(s.metrics) == {"piqe"} for s in result.results.values())
    piqe = pyiqa.create_metric("piqe", device="cpu", as_loss=False)
    floor = []
    for i in range(2):  # identity: the blurred input itself, scored with the same metric
        image = torch.from_numpy(
            read_image(tmp_path / "captures" / "blur" / f"shot{i}.png").transpose(2, 0, 1)
        )
        floor.append(float(piqe((torch.round(image[None] * 255) / 255).float())))
    assert result.results["identity"].metrics["piqe"] == pytest.approx(sum(floor) / 2, abs=1e-4)
    decisions = result.results["auto"].decisions
    assert sum(decisions.values()) == 2 and result.results["defocus"].decisions is None

    strips = sorted(p.name for p in (tmp_path / "out" / "strips").iterdir())
    assert strips == ["shot0.png", "shot1.png"]
    width, height = Image.open(tmp_path / "out" / "strips" / "shot0.png").size
    assert width == 3 * 40 + 2 * 2 and height > 32  # input, auto, defocus side by side under labels

    print_result(result)
    err = capsys.readouterr().err.splitlines()
    assert not any(line.startswith(("psnr:", "lpips:")) for line in err)
    notes = [line for line in err if "no sharp images" in line]
    assert len(notes) == 1 and "psnr, lpips not computable for this benchmark" in notes[0]
