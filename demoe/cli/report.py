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
@options.tracking_uri
@options.zoo_dirs
def report(experiment, runs, experiment_file, models, benches, out, formats, tracking_uri, zoo_dirs) -> None:
    """Tables, figures and one HTML page comparing finished evaluation and finetuning runs."""
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
    )
    main_table = result.table("main")
    if main_table is not None:
        click.echo(to_markdown(main_table))
    for item in result.collection.left_out:
        click.echo(f"left out: {item}", err=True)
    page = result.out / "report.html"
    click.echo(f"report: {page if page.exists() else result.out} ({len(result.files)} files)")
