"""``demoe-eval finetune``: train as an experiments/*.yaml says; the best checkpoint joins the zoo."""

import os
import sys
from pathlib import Path

import click

from demoe.cli import options
from demoe.config import load_config
from demoe.finetune import published
from demoe.finetune.loop import finetune as run_finetune
from demoe.finetune.options import RunOptions, resolve_config
from demoe.runtime import launch_torchrun
from demoe.tracking import mlflow_runs


@click.command(
    cls=options.DemoeCommand,
    epilog=options.examples(
        "demoe-eval finetune -c tiny_synth_restore",
        "demoe-eval finetune -c experiments/drmi_finetune.yaml --set train.lr=1e-4 --nproc 2",
        "demoe-eval finetune -c options/train/DRMI_finetune.yml --checkpoint models/DeMoE.pt",
    ),
)
@click.option(
    "-c",
    "--config",
    "-e",
    "--experiment-file",
    "config_file",
    required=True,
    type=click.Path(path_type=Path),
    help="Training options YAML: a path, or the name of a shipped experiment (tiny_synth_restore); an "
    "option file of the published DeMoE scripts is translated (printed, and saved in the run folder).",
)
@click.option("--model", default=None, help="Zoo model to start from (overrides the file's model/network_g).")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Weights to start from (path.pretrain_network_g).",
)
@options.param_key
@options.cast_weights
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override an option, e.g. train.lr=1e-4."
)
@click.option(
    "--resume", is_flag=True, help="Insist on resuming (a run folder with a training state resumes anyway)."
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run folder [default: runs/NAME].")
@click.option("--device", default=None, help="cpu, cuda, cuda:N or auto (overrides the file's device).")
@options.nproc
@options.mlflow_experiment
@options.tracking_uri
@options.tracking_switch
@click.option(
    "--register-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the best checkpoint becomes a zoo entry [default: $DEMOE_HOME/zoo].",
)
@click.option(
    "--replace-entry",
    is_flag=True,
    help="Replace a zoo entry of the same name that another run made [default: keep it as NAME-DATE-TIME].",
)
@options.zoo_dirs
@options.data_root
@options.bench_dirs
def finetune(
    config_file,
    model,
    checkpoint,
    param_key,
    cast_weights,
    overrides,
    resume,
    out,
    device,
    nproc,
    experiment,
    tracking_uri,
    tracking,
    register_dir,
    replace_entry,
    zoo_dirs,
    data_root,
    bench_dirs,
) -> None:
    """Finetune (or train) a model as the YAML says; the best checkpoint becomes a zoo entry."""
    if nproc and nproc > 1:
        raise SystemExit(launch_torchrun(nproc, "finetune", sys.argv[2:]))
    doc, translation = load_config(config_file), None
    if published.is_published(doc):  # the published scripts' option format, translated once
        translation = published.translate(doc, overrides, source=str(config_file))
        doc, overrides = translation.options, translation.overrides
    cfg = resolve_config(
        doc,
        overrides,
        model,
        checkpoint,
        device,
        source=str(config_file),
        param_key=param_key,
        cast_weights=cast_weights,
    )
    if tracking and int(os.environ.get("RANK", "0")) == 0:
        mlflow_runs.check_server(tracking_uri)
    searched = [*([register_dir] if register_dir else []), *zoo_dirs]
    opts = RunOptions(
        run_dir=out,
        resume=resume,
        tracking=tracking,
        tracking_uri=tracking_uri,
        experiment=experiment,
        zoo_dir=register_dir,
        replace_entry=replace_entry,
        zoo_dirs=searched,
        data_root=data_root,
        bench_dirs=list(bench_dirs),
    )
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if translation is not None and main_rank:
        click.echo("\n".join(translation.lines))
    result = run_finetune(cfg, opts)
    if translation is not None and main_rank:  # saved once the run folder was accepted and trained
        saved = published.save(translation, config_file, opts.run_folder(cfg))
        click.echo(f"saved as {saved}: `demoe-eval finetune -c {saved}` runs the same from now on")
    if result.get("zoo_entry"):
        click.echo(f"run folder: {result['run_dir']}")
        if result.get("best_psnr") is not None:
            click.echo(f"best validation psnr: {result['best_psnr']:.2f}")
        where = f" --zoo-dir {register_dir}" if register_dir else ""
        click.echo(f"try it: demoe-eval run --model {cfg['name']}{where}")
        if result.get("run_id"):
            click.echo(f"mlflow run: {result['run_id']}")
