"""``demoe-eval ui``: MLflow's own UI on the store that run, finetune and report use."""

import os
import sys

import click

from demoe.cli import options
from demoe.tracking.mlflow_runs import DEFAULT_STORE


@click.command(
    cls=options.DemoeCommand,
    epilog=options.examples(
        "demoe-eval ui", "demoe-eval ui --port 5001 --tracking-uri sqlite:///elsewhere/mlflow.db"
    ),
)
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@options.tracking_uri
def ui(port: int, tracking_uri: str | None) -> None:
    """Start the MLflow UI on the store that run, finetune and report use (one worker, light on memory).

    The command becomes the server (exec), so stopping it (Ctrl-C, SIGTERM) stops the server."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "1"]
    click.echo(f"MLflow UI for {uri} on http://127.0.0.1:{port}")
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)
