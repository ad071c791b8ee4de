"""``demoe-eval perf``: our inference path against the published forward of the same network."""

from pathlib import Path

import click

from demoe import perf as perf_lib
from demoe.cli import options


@click.command(
    cls=options.DemoeCommand,
    epilog=options.examples(
        "demoe-eval perf", "demoe-eval perf --full", "demoe-eval perf --sizes 256,512,1024 --k 1,3,5"
    ),
)
@click.option("--model", default=None, help="Zoo DeMoE model whose architecture to time [DeMoE].")
@click.option("--sizes", default=None, help="Square image sides, comma-separated [256,512].")
@click.option("--batch-size", "batches", default=None, help="Batch sizes, comma-separated [1; --full: 1,4].")
@click.option("--k", "ks", default=None, help="Experts used per MoE block, comma-separated [1,3].")
@click.option("--precision", "precisions", default=None, help="Our precisions, comma-separated [fp32,bf16].")
@click.option(
    "--compile",
    "compile_mode",
    type=click.Choice(["auto", "on", "off"]),
    default="off",
    show_default=True,
    help="Also time a torch.compile'd copy of our path (auto: only where compiling pays, not on a CPU).",
)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=None, help="Timed rounds [3; --full: 5].")
@click.option("--tile", type=click.IntRange(min=16), default=None, help="Tile side for the 4K image [512].")
@click.option("--tile-overlap", type=click.IntRange(min=0), default=None, help="Tile overlap [32].")
@click.option("--large/--no-large", default=True, show_default=True, help="Time the 4K image in tiles.")
@click.option(
    "--pipeline-images",
    type=click.IntRange(min=0),
    default=None,
    help="aio-synth images for the evaluator-against-forward measurement, 0 to skip [10; --full: 40].",
)
@click.option("--quick", is_flag=True, help="Smoke run: tiny model, small sizes, two rounds.")
@click.option(
    "--full",
    is_flag=True,
    help="The full sweep: batches 1 and 4, five rounds, 40 evaluator images (several times as long).",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("perf.json"), show_default=True)
def perf(
    model,
    sizes,
    batches,
    ks,
    precisions,
    compile_mode,
    threads,
    repeats,
    tile,
    tile_overlap,
    large,
    pipeline_images,
    quick,
    full,
    out,
) -> None:
    """Time our inference path against the published forward of the same network, in one run."""
    overrides = {
        "model": model,
        "sizes": options.int_csv("--sizes", sizes),
        "batches": options.int_csv("--batch-size", batches),
        "ks": options.int_csv("--k", ks),
        "precisions": options.csv(precisions),
        "compile": compile_mode,
        "threads": threads,
        "repeats": repeats,
        "tile": tile,
        "tile_overlap": tile_overlap,
        "pipeline_images": pipeline_images,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if quick and full:
        raise click.UsageError("--quick and --full: give one or the other")
    make = perf_lib.quick_config if quick else perf_lib.full_config if full else perf_lib.PerfConfig
    cfg = make(**overrides)
    if not large:
        cfg.large_image = None
    results = perf_lib.run(cfg, progress=lambda line: click.echo(line, err=True))
    for title, rows, columns in perf_lib.display_tables(results):
        click.echo(f"\n{title}")
        options.print_table(rows, columns)
    click.echo(f"results: {perf_lib.write(results, out)}")
