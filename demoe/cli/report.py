"""``demoe-eval report``: tables, figures and one HTML page, regenerated from what MLflow holds."""

from pathlib import Path

import click

from demoe.cli import options
from demoe.report.build import build_report, default_out, parse_formats
from demoe.report.collect import Selection
from demoe.report.formats import to_markdown


@click.command(
    cls=options.DemoeCommand,
    epilog=options.examples(
        "demoe-eval report",
        "demoe-eval report -e experiments/tiny_synth_k_sweep.yaml",
        "demoe-eval report --runs RUN_ID,RUN_ID --format md,html",
        "demoe-eval report --compare DeMoE-tiny-synth DeMoE-tiny-synth-k1",
    ),
)
@options.mlflow_experiment
@click.option("--runs", default=None, help="Comma list of run ids (evaluations, sweeps or finetunings).")
@click.option(
    "-e",
    "--experiment-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Sweep file (a path or a shipped name): report the latest sweep run of that name.",
)
@click.option("--models", default=None, help="Comma list of model names to keep.")
@click.option("--benches", default=None, help="Comma list of benchmark names to keep.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Report folder [default: reports/NAME, NAME the experiment or sweep].",
)
@click.option(
    "--format",
    "formats",
    default="md,html,tex,csv",
    show_default=True,
    help="Comma list of md, html, tex, csv.",
)
@click.option(
    "--compare",
    nargs=2,
    metavar="A B",
    default=None,
    help="Print A against B image by image (models or run ids) on their common benchmarks; writes no report.",
)
@options.tracking_uri
@options.zoo_dirs
@options.bench_dirs
def report(
    experiment,
    runs,
    experiment_file,
    models,
    benches,
    out,
    formats,
    compare,
    tracking_uri,
    zoo_dirs,
    bench_dirs,
) -> None:
    """Tables, figures and one HTML page comparing finished evaluation and finetuning runs."""
    if compare:
        from demoe.report.compare import compare_runs

        if runs or models:
            raise click.UsageError("--compare A B names the models or runs itself: drop --runs and --models")
        selection = Selection(
            experiment=experiment, experiment_file=experiment_file, benches=options.csv(benches) or []
        )
        table = compare_runs(selection, *compare, tracking_uri=tracking_uri)
        click.echo(f"{table.title}\n\n{to_markdown(table)}")
        for note in table.notes:
            click.echo(note)
        return
    selection = Selection(
        experiment=experiment,
        run_ids=options.csv(runs) or [],
        experiment_file=experiment_file,
        models=options.csv(models) or [],
        benches=options.csv(benches) or [],
    )
    result = build_report(
        selection,
        out or default_out(selection),
        parse_formats(formats),
        tracking_uri=tracking_uri,
        zoo_dirs=list(zoo_dirs),
        bench_dirs=list(bench_dirs),
    )
    main_table = result.table("main")
    if main_table is not None:
        click.echo(to_markdown(main_table))
    for table in (t for t in result.tables if t.name.startswith("unpaired__")):  # no sharp images
        click.echo(f"{table.title}\n\n{to_markdown(table)}")
    for item in result.collection.left_out:
        click.echo(f"left out: {item}", err=True)
    page = result.out / "report.html"
    click.echo(f"report: {page if page.exists() else result.out} ({len(result.files)} files)")
