"""What per-image records add up to per routing mode."""

from demoe.metrics.summary import summarize
from demoe.records import ImageRecord


def test_summary_means_accuracy_confusion_and_usage():
    records = [
        {"mode": "identity", "name": "x", "label": "defocus", "seconds": 0.0, "psnr": 20.0},
        {"mode": "identity", "name": "y", "label": "low_light", "seconds": 0.0, "psnr": 10.0},
        {
            "mode": "auto",
            "name": "x",
            "label": "defocus",
            "seconds": 0.5,
            "psnr": 30.0,
            "pred_task": "defocus",
            "experts": [[0], [0]],
        },
        {
            "mode": "auto",
            "name": "y",
            "label": "low_light",
            "seconds": 0.25,
            "psnr": 21.0,
            "pred_task": "defocus",
            "experts": [[0], [0]],
        },
    ]
    summary = summarize([ImageRecord.from_json(r) for r in records], ["psnr", "lpips"], num_blocks=2)
    assert summary["identity"].metrics == {"psnr": 15.0}
    assert summary["identity"].seconds_per_image is None
    auto = summary["auto"]
    assert auto.metrics == {"psnr": 25.5} and auto.seconds_per_image == 0.375
    assert auto.routing_accuracy == 0.5
    confusion = auto.confusion.matrix
    assert confusion[0][0] == 1 and confusion[4][0] == 1 and sum(map(sum, confusion)) == 2
    assert auto.expert_usage["low_light"] == [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0]]
    assert "seconds_per_image" not in summary["identity"].to_json()
