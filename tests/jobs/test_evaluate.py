from pathlib import Path

import pytest
from helpers import tiny_eval_config, write_pairs


def test_saved_samples_include_the_benchmarks_in_the_wild_photo_without_a_sharp_image(tmp_path):
    import numpy as np
    import yaml
    from PIL import Image

    from demoe.jobs.evaluate import evaluate

    rng = np.random.default_rng(0)
    root = tmp_path / "data" / "Lab"
    write_pairs(root, 2, rng, prefix="img")
    (root / "wild").mkdir()
    Image.fromarray(rng.integers(0, 256, (24, 40), dtype=np.uint8)).save(root / "wild" / "street.png")
    (tmp_path / "manifests").mkdir()
    manifest = {
        "name": "Lab",
        "task": "defocus",
        "root": "Lab",
        "layout": {"blurred": "blur", "sharp": "sharp"},
        "splits": {"test": {"pairs": 2}},
        "test_split": "test",
        "extras": {"wild": "wild/street.png"},
    }
    (tmp_path / "manifests" / "Lab.yaml").write_text(yaml.safe_dump(manifest))
    cfg = tiny_eval_config(
        tmp_path,
        "Lab",
        routing=["auto", "oracle"],
        save_images=1,
        data_root=tmp_path / "data",
        bench_dirs=[tmp_path / "manifests"],
    )
    results = evaluate(cfg)
    assert results.timing.workers == 0, "on a CPU the images decode in the main process"
    samples = sorted(p.name for p in (tmp_path / "out" / "samples").glob("*.png"))
    assert samples == [
        "img0__auto.png",
        "img0__blurred.png",
        "img0__oracle.png",
        "img0__sharp.png",
        "wild__street__auto.png",
        "wild__street__blurred.png",
    ]
    assert Image.open(tmp_path / "out" / "samples" / "wild__street__auto.png").size == (40, 24)


def test_save_images_keeps_the_first_n_images_of_each_blur_label(tmp_path):
    from dataclasses import replace

    import numpy as np

    from demoe.jobs.evaluate import evaluate

    rng = np.random.default_rng(0)
    for task in ("defocus", "low_light"):
        write_pairs(tmp_path / "bench" / "test" / task, 3, rng)
    cfg = tiny_eval_config(tmp_path, str(tmp_path / "bench"), routing=["auto"], save_images=2)
    evaluate(cfg)
    blurred = sorted(p.name for p in (tmp_path / "out" / "samples").glob("*__blurred.png"))
    assert blurred == [
        "defocus__0__blurred.png",
        "defocus__1__blurred.png",
        "low_light__0__blurred.png",
        "low_light__1__blurred.png",
    ]
    records = (tmp_path / "out" / "records.rank0.jsonl").read_text()
    evaluate(replace(cfg, save_images=3))  # scores all there: only the images still wanted are restored
    assert (tmp_path / "out" / "samples" / "low_light__2__auto.png").is_file()
    assert len(list((tmp_path / "out" / "samples").glob("*__auto.png"))) == 6
    assert (tmp_path / "out" / "records.rank0.jsonl").read_text() == records


def write_task_bench(root: Path, tasks: tuple[str, ...], count: int = 2) -> Path:
    """A folder benchmark whose sub-folders are named after tasks, so they carry those task labels."""
    import numpy as np

    rng = np.random.default_rng(1)
    for task in tasks:
        write_pairs(root / task, count, rng)
    return root


def test_oracle_routing_forces_each_images_own_task(tmp_path):
    from demoe.jobs.evaluate import evaluate

    bench = write_task_bench(tmp_path / "bench", ("defocus", "synth_global_motion", "low_light"))
    results = evaluate(tiny_eval_config(tmp_path, str(bench), routing=["oracle", "local_motion"]))
    blocks = 3  # DeMoE-tiny: one MoE block after the middle blocks and one per decoder level
    for mode, expert_of in (
        ("oracle", {"defocus": 0, "synth_global_motion": 3, "low_light": 4}),
        ("local_motion", dict.fromkeys(("defocus", "synth_global_motion", "low_light"), 2)),
    ):
        usage = results.results[mode].expert_usage
        assert set(usage) == set(expert_of)
        for label, expert in expert_of.items():
            assert usage[label] == [[2 if e == expert else 0 for e in range(5)]] * blocks, (mode, label)


def test_a_rerun_with_an_added_routing_mode_scores_that_mode_on_every_image(tmp_path):
    from dataclasses import replace

    from demoe.jobs.evaluate import evaluate
    from demoe.tracking.results import read_records

    bench = write_task_bench(tmp_path / "bench", ("defocus", "low_light"))
    cfg = tiny_eval_config(tmp_path, str(bench), routing=["auto"])
    evaluate(cfg)
    results = evaluate(replace(cfg, routing=["auto", "defocus"]))
    assert results.results["defocus"].images == 4
    assert results.results["auto"].images == 4
    modes = sorted({r.mode for r in read_records(tmp_path / "out")})
    assert modes == ["auto", "defocus", "identity"]


def _psnr_8bit(a: Path, b: Path, border: int) -> float:
    import math

    import numpy as np
    from PIL import Image

    x, y = (np.asarray(Image.open(p), dtype=np.float64) / 255 for p in (a, b))
    if border:
        x, y = x[border:-border, border:-border], y[border:-border, border:-border]
    return 10 * math.log10(1 / float(((x - y) ** 2).mean()))


def test_identity_scores_the_blurred_input_under_the_benchmarks_crop_border(tmp_path):
    import yaml

    from demoe.jobs.evaluate import evaluate
    from demoe.tracking.results import read_records

    root = write_task_bench(tmp_path / "data" / "Cropped", ("defocus",), count=3)
    (tmp_path / "manifests").mkdir()
    for border in (0, 5):
        manifest = {
            "name": f"Cropped{border}",
            "root": "Cropped",
            "layout": {"subsets": [{"name": "defocus", "folder": "defocus", "label": "defocus"}]},
            "splits": {"test": {"pairs": 3}},
            "protocol": {"color": "rgb", "crop_border": border, "quantize_8bit": True},
        }
        (tmp_path / "manifests" / f"c{border}.yaml").write_text(yaml.safe_dump(manifest))
        cfg = tiny_eval_config(
            tmp_path / f"run{border}",
            f"Cropped{border}",
            routing=["auto"],
            data_root=tmp_path / "data",
            bench_dirs=[tmp_path / "manifests"],
        )
        results = evaluate(cfg)
        assert results.protocol["crop_border"] == border
        identity = {r.name: r.scores["psnr"] for r in read_records(cfg.out) if r.mode == "identity"}
        for i in range(3):
            pair = root / "defocus"
            expected = _psnr_8bit(pair / "blur" / f"{i}.png", pair / "sharp" / f"{i}.png", border)
            assert identity[f"defocus/{i}"] == pytest.approx(expected, abs=1e-4)


def _evaluate_as_rank(rank: int, port: int, bench: str, tmp: str, answers) -> None:
    """One torchrun-like rank of a 2-process gloo evaluation; rank 1 scores slowly, so rank 0 finishes
    its own shard first and sees rank 1's records only through the gather."""
    import os
    import time

    import demoe.jobs.evaluate as evaluate_module

    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    if rank == 1:
        score_loader = evaluate_module.score_loader

        def slow_score_loader(*args, **kwargs):
            for scored in score_loader(*args, **kwargs):
                time.sleep(1.0)
                yield scored

        evaluate_module.score_loader = slow_score_loader
    result = evaluate_module.evaluate(tiny_eval_config(Path(tmp), bench, routing=["auto"]))
    answers.put((rank, None if result is None else (result.summary("auto").images, result.timing.world_size)))


def test_two_ranks_each_score_their_shard_and_rank_0_summarises_all_images(tmp_path):
    import socket

    import numpy as np
    import torch.multiprocessing as mp

    write_pairs(tmp_path / "bench", 4, np.random.default_rng(0))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    answers = ctx.Queue()
    ranks = [
        ctx.Process(target=_evaluate_as_rank, args=(r, port, str(tmp_path / "bench"), str(tmp_path), answers))
        for r in (0, 1)
    ]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=120)
    assert [p.exitcode for p in ranks] == [0, 0]
    got = dict(answers.get(timeout=5) for _ in ranks)
    assert got == {0: (4, 2), 1: None}, "rank 0 summarises the 4 images of both shards"
    per_rank = sorted(p.name for p in (tmp_path / "out").glob("records*.jsonl"))
    assert len(per_rank) == 2, per_rank


def test_the_same_evaluation_twice_writes_the_same_bytes_but_for_timing(tmp_path):
    """per_image.csv/.parquet are byte-identical; results.json differs only in its ``timing`` field;
    the seconds a clock measured are in ``timing.csv``."""
    import json
    import shutil

    import pandas as pd

    from demoe.jobs.evaluate import evaluate

    bench = write_task_bench(tmp_path / "bench", ("defocus", "low_light"), count=3)
    cfg = tiny_eval_config(tmp_path, str(bench), routing=["auto", "oracle"])
    runs = []
    for _ in range(2):
        shutil.rmtree(cfg.out, ignore_errors=True)
        evaluate(cfg)
        runs.append({p.name: p.read_bytes() for p in cfg.out.iterdir() if p.is_file()})
    first, second = runs
    for name in ("per_image.csv", "per_image.parquet"):
        assert first[name] == second[name], f"{name} differs between two identical evaluations"
    results = [json.loads(run["results.json"]) for run in runs]
    assert results[0]["timing"] != results[1]["timing"], "wall time differs between any two runs"
    results[1]["timing"] = results[0]["timing"]
    assert json.dumps(results[1], indent=1, sort_keys=True).encode() == first["results.json"]
    assert results[0]["comparisons"] and results[0]["results"]["auto"]["intervals"]["psnr"]
    timing = pd.read_csv(cfg.out / "timing.csv")
    assert list(timing.columns) == ["mode", "name", "seconds"] and len(timing) == 3 * 6
    auto = timing[timing["mode"] == "auto"]["seconds"]
    assert (auto > 0).all() and (timing[timing["mode"] == "identity"]["seconds"] == 0).all()
    seconds = json.loads(second["results.json"])["timing"]["seconds_per_image"]
    assert seconds["auto"] == pytest.approx(auto.mean(), abs=1e-6) and "identity" not in seconds
