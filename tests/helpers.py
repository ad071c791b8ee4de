"""Helpers the tests share: real image files, small evaluation configs, the CLI in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TINY_A = FIXTURES / "tiny_a.pt"


def write_pairs(folder: Path, count: int, rng, prefix: str = "") -> None:
    """``count`` real PNG pairs under ``folder/{blur,sharp}``: random 32x32 images and their darker copies."""
    import numpy as np
    from PIL import Image

    for sub in ("blur", "sharp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / "sharp" / f"{prefix}{i}.png")
        Image.fromarray(image // 2).save(folder / "blur" / f"{prefix}{i}.png")


def tiny_run_args(bench: Path, out: Path, *extra: str, checkpoint: Path = TINY_A) -> list[str]:
    """``demoe-eval run`` arguments of DeMoE-tiny on ``bench``: PSNR only, no workers, no tracking."""
    args = ["run", "--model", "DeMoE-tiny", "--checkpoint", str(checkpoint), "--bench", str(bench)]
    return args + ["--metrics", "psnr", "--workers", "0", "--no-tracking", "--out", str(out), *extra]


def tiny_eval_config(tmp_path: Path, bench: str, **options):
    """DeMoE-tiny with the reference fixture's weights, PSNR only, results under ``tmp_path/out``."""
    import torch

    from demoe.jobs.evaluate import EvalConfig

    torch.set_num_threads(1)
    return EvalConfig(
        model="DeMoE-tiny",
        bench=bench,
        checkpoint=str(TINY_A),
        metrics=["psnr"],
        out=tmp_path / "out",
        **options,
    )


def cli(
    *args: str, cwd: Path | None = None, env_extra: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``demoe-eval ARGS`` as a user runs it: a subprocess of this checkout, one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "demoe.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_drmi(root: Path, train: int = 4, test: int = 2, side: int = 48) -> Path:
    """A DRMI-shaped folder ``root/DRMI_dataset/{train,test}/{meta,ground_truth}`` of real PNG pairs: smooth
    random scenes and their Gaussian-blurred copies (``meta/``, the metalens photos). Returns ``root``."""
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(7)
    for split, count in (("train", train), ("test", test)):
        for sub in ("meta", "ground_truth"):
            (root / "DRMI_dataset" / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            coarse = rng.integers(0, 256, size=(side // 8, side // 8, 3), dtype=np.uint8)
            sharp = Image.fromarray(coarse).resize((side, side), Image.BICUBIC)
            sharp.save(root / "DRMI_dataset" / split / "ground_truth" / f"{i:03d}.png")
            sharp.filter(ImageFilter.GaussianBlur(1.5)).save(
                root / "DRMI_dataset" / split / "meta" / f"{i:03d}.png"
            )
    return root
