"""What the figures show: bar heights, boxes, panels, and the marks for missing images."""

import numpy as np
import pandas as pd
from PIL import Image

from demoe.metrics import figures as routing_figures
from demoe.report import figures


def bar_heights(ax) -> list[float]:
    return [round(p.get_height(), 6) for p in ax.patches]


def test_expert_usage_is_the_share_of_images_when_images_are_given():
    usage = {"defocus": [[0, 3, 0, 0, 3], [0, 3, 0, 0, 3]], "low_light": [[0, 0, 0, 0, 2], [0, 0, 0, 0, 2]]}
    fig = routing_figures.expert_usage_figure(usage, "k=2", images={"defocus": 3, "low_light": 1})
    assert len(fig.axes) == 1 and fig.axes[0].get_title().startswith("every MoE block")
    assert bar_heights(fig.axes[0]) == [0, 1, 0, 0, 1, 0, 0, 0, 0, 2]
    assert fig.axes[0].get_ylabel() == "share of images using the expert"
    choices = routing_figures.expert_usage_figure(usage, "k=2")
    assert bar_heights(choices.axes[0]) == [0, 0.5, 0, 0, 0.5, 0, 0, 0, 0, 1]
    assert choices.axes[0].get_ylabel() == "share of expert choices"


def test_blocks_that_chose_differently_get_a_panel_each():
    usage = {"defocus": [[0, 3, 0, 0, 0], [3, 0, 0, 0, 0], [0, 3, 0, 0, 0]]}
    fig = routing_figures.expert_usage_figure(usage, "per block")
    assert [ax.get_title() for ax in fig.axes] == ["middle block", "decoder level 1", "decoder level 2"]


def test_distribution_has_one_box_per_task_and_mode_with_data():
    rows = []
    for mode in ("identity", "auto", "oracle"):
        for task in ("low_light", "defocus"):
            rows += [{"mode": mode, "label": task, "name": f"{task}/{i}", "psnr": 20.0 + i} for i in range(3)]
    table = pd.DataFrame(rows)
    fig = figures.distribution_figure(table, "psnr", "t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["defocus", "low-light"]
    assert len(ax.patches) == 6
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["identity", "auto", "oracle"]


def test_curves_share_panels_by_quantity():
    curves = {
        "train/loss": [(1, 0.5), (2, 0.4)],
        "train/router_ce": [(1, 1.6), (2, 1.2)],
        "lr": [(1, 1e-3), (2, 5e-4)],
        "val/psnr": [(2, 20.0), (4, 21.0)],
        "val/oracle/psnr": [(2, 20.5), (4, 21.5)],
        "val/identity/psnr": [(2, 18.0)],
    }
    fig = figures.curves_figure(curves, "run")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["training loss", "learning rate", "validation psnr"]
    val = fig.axes[2]
    assert sorted(t.get_text() for t in val.get_legend().get_texts()) == [
        "val/identity/psnr (step 2)",
        "val/oracle/psnr",
        "val/psnr",
    ]


def test_image_grid_crops_the_centre_and_marks_a_missing_image(tmp_path):
    image = np.zeros((300, 200, 3), dtype=np.uint8)
    image[150, 100] = 255
    Image.fromarray(image).save(tmp_path / "a.png")
    fig = figures.image_grid_figure([("row", [("blurred", tmp_path / "a.png"), ("auto", None)])], crop=64)
    shown = fig.axes[0].get_images()[0].get_array()
    assert shown.shape[:2] == (64, 64) and shown[32, 32].tolist() == [255, 255, 255]
    assert [t.get_text() for t in fig.axes[1].texts] == ["missing"]
