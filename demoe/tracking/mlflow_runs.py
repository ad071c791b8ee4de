"""Everything MLflow: logging evaluations, sweeps and finetunings, and reading runs back for reports.
This is the only module that imports mlflow (lazily, so that ``--help`` stays fast). Only global
rank 0 calls anything here.

Layout: a parent run ``MODEL@BENCH`` (tags ``demoe.kind=eval``, ``demoe.model``, ``demoe.bench``,
``demoe.checkpoint_sha256``, ``demoe.bench_fingerprint``; the resolved config as params and YAML, the
statistics' settings as ``stats.*`` params) with one child run per routing mode (tag ``demoe.routing``;
metrics named as the pyiqa metric with its interval, plus ``routing_accuracy`` and
``seconds_per_image``); the parent shows the children's metrics and the paired comparisons of modes
(the names: ``demoe.tracking.run_metrics``).
A sweep is a parent (``demoe.kind=sweep``) above its evaluations; a finetuning is one run
(``demoe.kind=finetune``) with its curves; a restoration of captures is one run
(``demoe.kind=restore``) with its table and strips.
"""

import contextlib
import hashlib
import json
import logging
import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

from demoe.errors import DemoeError
from demoe.records import EvalResult
from demoe.tracking.results import ARTIFACTS, STRIPS, read_results, versions
from demoe.tracking.run_metrics import headline_metrics, mode_metrics

EVAL, SWEEP, FINETUNE, RESTORE = "eval", "sweep", "finetune", "restore"
DEFAULT_STORE = "sqlite:///mlflow.db"  # MLflow's own default: a SQLite file in the working folder
DEFAULT_EXPERIMENT = "demoe-eval"


def experiment_name(experiment: str | None) -> str:
    """The MLflow experiment a command uses: the one named, else ``$MLFLOW_EXPERIMENT_NAME``, else ours
    (never MLflow's ``Default``)."""
    return experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


SERVER_PROBE_S = 5


class TrackingError(DemoeError):
    pass


def store_uri(tracking_uri: str | None) -> str:
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "MLflow's default store"


SQLITE_HEADER = b"SQLite format 3\x00"


def _check_sqlite_file(uri: str, write: bool) -> None:
    """A local SQLite store must be a SQLite database (when it exists) that this user can write."""
    path = Path(uri.removeprefix("sqlite:///"))
    option = f"--tracking-uri {uri}"
    if path.is_file():
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
        if header != SQLITE_HEADER and path.stat().st_size > 0:
            raise TrackingError(
                f"{option}: {path} is not a SQLite database (damaged, or another file); move it aside "
                "and run again to start a new store, or give another --tracking-uri"
            )
        if write and not os.access(path, os.W_OK):
            raise TrackingError(
                f"{option}: {path} is read-only; make it writable, give another --tracking-uri, or run "
                "with --no-tracking and log the results later with `demoe-eval log DIR`"
            )
    elif write and not os.access(path.parent if str(path.parent) else Path("."), os.W_OK):
        raise TrackingError(
            f"{option}: cannot create {path} in a folder this user may not write; give another --tracking-uri"
        )


def check_server(tracking_uri: str | None, write: bool = True) -> None:
    """Before any work: the tracking store must be usable. A server (an http(s) URI) must answer within
    seconds, and MLflow's own requests to it are capped to a few retries (unset, MLflow retries for
    minutes); a local SQLite file must be a SQLite database, writable when ``write``."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE
    if uri.startswith("sqlite:///"):
        _check_sqlite_file(uri, write)
        return
    if not uri.startswith(("http://", "https://")):
        return
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=SERVER_PROBE_S).close()
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise TrackingError(
            f"--tracking-uri {uri}: no MLflow server answers ({reason}); start it, give another "
            "--tracking-uri, or run with --no-tracking and log the results later with `demoe-eval log DIR`"
        ) from None


def set_tracking(tracking_uri: str | None, experiment: str | None) -> str:
    """Point MLflow at ``tracking_uri`` (else ``MLFLOW_TRACKING_URI``, else MLflow's default) and ``experiment``."""
    import mlflow

    # MLflow announces at INFO that it creates the tables of a new SQLite store; its warnings still show
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    if experiment:
        mlflow.set_experiment(experiment)
    return mlflow.get_tracking_uri()


def results_digest(result: EvalResult, parent_run_id: str | None) -> str:
    """What makes two loggings of a results folder the same: its results (with the seconds per image of
    each mode) without the rest of timing and package versions, and the sweep it was logged under."""
    content = {k: v for k, v in result.to_json().items() if k not in ("timing", "versions")}
    for mode, summary in result.results.items():  # where results.json kept them before they joined timing
        if summary.seconds_per_image is not None:
            content["results"][mode]["seconds_per_image"] = summary.seconds_per_image
    text = json.dumps({"results": content, "parent": parent_run_id}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = str(value)[:500]
    return out


# ----------------------------------------------------------------------------- evaluations and sweeps


def log_results(
    folder: Path,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Log a results folder as a parent run with one child per routing mode; returns the parent run id.
    A folder already logged (the same results, under the same sweep) is not logged twice: the run
    logged before is returned."""
    folder = Path(folder)
    result = read_results(folder)
    try:
        return _log_results(folder, result, tracking_uri, experiment_name(experiment), parent_run_id)
    except TrackingError:
        raise
    except Exception as e:  # any failure to reach or write the store leaves the results on disk
        raise TrackingError(
            f"could not log to MLflow at {store_uri(tracking_uri)} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); the results are kept in {folder}: log them later with "
            f"`demoe-eval log {folder}`"
        ) from None


def eval_tags(folder: Path, result: EvalResult) -> dict[str, str]:
    info = result.model_info
    tags = {
        "demoe.kind": EVAL,
        "demoe.model": result.model,
        "demoe.bench": result.bench,
        "demoe.split": result.split,
        "demoe.checkpoint_sha256": info.checkpoint_sha256 or "none",
        "demoe.checkpoint_param_key": info.checkpoint_param_key or "none",
        "demoe.bench_fingerprint": result.bench_info.fingerprint,
        "demoe.k_used": str(info.kwargs.get("k_used", "")),
        "demoe.params": str(info.params),
        "demoe.results_dir": str(folder.resolve()),
    }
    if result.bench_info.protocol_note:
        tags["demoe.protocol_note"] = result.bench_info.protocol_note
    if result.config.get("task"):  # every pair labelled with this task for the run (run --task)
        tags["demoe.assigned_task"] = str(result.config["task"])
    bench = result.bench_info
    if bench.partial:
        tags["demoe.partial_benchmark"] = f"{bench.pairs} of {bench.expected_pairs} pairs"
    if bench.unpaired:  # no sharp images: no-reference metrics, routing and strips only
        tags["demoe.unpaired"] = "true"
    if bench.skipped_bad_pairs:
        tags["demoe.skipped_bad_pairs"] = ", ".join(bench.skipped_bad_pairs)[:4000]
    if result.metrics_unavailable:
        tags["demoe.metrics_unavailable"] = "; ".join(
            f"{k}: {v}" for k, v in result.metrics_unavailable.items()
        )
    return tags


def benchmark_dataset(result: EvalResult):
    """The benchmark as an MLflow dataset input: its name and split, its fingerprint as the digest."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    return MetaDataset(
        LocalArtifactDatasetSource(result.bench_info.root),
        name=f"{result.bench}/{result.split}",
        digest=result.bench_info.fingerprint[:36],
    )


def source_tags(installed: dict) -> dict[str, str]:
    """MLflow's source tags naming demoe-eval itself: its own commit from a checkout, else its version
    (MLflow would otherwise record the commit of whatever repository the command was started in)."""
    commit, version = installed.get("git_commit"), installed.get("demoe-eval")
    return {
        "mlflow.source.name": "demoe-eval",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.git.commit": commit or f"demoe-eval {version or 'unknown version'}",
    }


def _log_results(folder: Path, result: EvalResult, tracking_uri, experiment, parent_run_id) -> str:
    import mlflow

    set_tracking(tracking_uri, experiment)
    digest = results_digest(result, parent_run_id)
    logged = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string=f"tags.`demoe.results_digest` = '{digest}' and attributes.status = 'FINISHED'",
        output_format="list",
    )
    if logged:
        print(f"already logged as run {logged[0].info.run_id}: not logged again", file=sys.stderr)
        return logged[0].info.run_id
    tags = eval_tags(folder, result)
    parent_tags = tags | {"demoe.results_digest": digest}
    if parent_run_id:
        parent_tags["mlflow.parentRunId"] = parent_run_id
    parent_tags |= source_tags(result.versions)
    with mlflow.start_run(run_name=result.run_name, tags=parent_tags) as parent:
        params = {"config": result.config, "protocol": result.protocol}
        if result.statistics is not None:
            params["stats"] = result.statistics.to_json()
        mlflow.log_params(flat_params(params))
        mlflow.log_metrics(headline_metrics(result))
        mlflow.log_input(benchmark_dataset(result), context=result.split)
        for name in ARTIFACTS:
            if (folder / name).exists():
                mlflow.log_artifact(str(folder / name))
        for sub in ("samples", STRIPS):
            if (folder / sub).is_dir():
                mlflow.log_artifacts(str(folder / sub), artifact_path=sub)
        for mode, summary in result.results.items():
            with mlflow.start_run(
                run_name=f"{result.run_name}:{mode}",
                nested=True,
                tags={**tags, "demoe.routing": mode, "mlflow.parentRunId": parent.info.run_id},
            ):
                mlflow.log_metrics(mode_metrics(summary))
        return parent.info.run_id


def start_sweep(name: str, doc: dict, tracking_uri: str | None, experiment: str | None) -> str:
    """Create the parent run of a sweep (tag ``demoe.kind=sweep``) and return its id."""
    import mlflow

    try:
        set_tracking(tracking_uri, experiment_name(experiment))
        with mlflow.start_run(run_name=name, tags={"demoe.kind": SWEEP} | source_tags(versions())) as run:
            mlflow.log_params(flat_params({"sweep": doc}))
            mlflow.log_text(yaml.safe_dump(doc, sort_keys=False), "sweep.yaml")
            return run.info.run_id
    except Exception as e:
        raise TrackingError(
            f"could not log to MLflow at {store_uri(tracking_uri)} ({type(e).__name__}); rerun with "
            "--no-tracking and log each results folder later with `demoe-eval log DIR`"
        ) from None


def log_restore(folder: Path, config: dict, metrics: dict, artifacts: list, uri=None, experiment=None) -> str:
    """``demoe-eval restore`` as one run (tag ``demoe.kind=restore``; ``demoe.model``, ``demoe.routing``,
    ``demoe.checkpoint_sha256`` and params from ``config``); ``artifacts``: files, and folders by name."""
    import mlflow

    tags = {f"demoe.{k}": str(config.get(k)) for k in ("model", "checkpoint_sha256", "routing")}
    try:
        set_tracking(uri, experiment_name(experiment))
        tags |= {"demoe.kind": RESTORE} | source_tags(versions())
        with mlflow.start_run(run_name=f"restore:{config.get('model')}", tags=tags) as run:
            mlflow.log_params(flat_params({"config": config}))
            mlflow.log_metrics(metrics)
            for path in map(Path, artifacts):
                if path.is_dir():
                    mlflow.log_artifacts(str(path), path.name)
                else:
                    mlflow.log_artifact(str(path))
            return run.info.run_id
    except Exception as e:  # the restored images and their table stay on disk
        raise TrackingError(
            f"could not log to MLflow at {store_uri(uri)} ({type(e).__name__}); {folder} is kept"
        ) from None


# ----------------------------------------------------------------------------- finetuning


class FinetuneTracker:
    """MLflow logging of a finetuning run (rank 0 only). A failure to log warns once and training goes on."""

    def __init__(self, enabled: bool, tracking_uri: str | None, experiment: str | None):
        self.enabled, self.uri, self.experiment, self.run_id = enabled, tracking_uri, experiment, None

    def _call(self, fn):
        if not self.enabled:
            return None
        try:
            return fn()
        except Exception as e:
            print(
                f"warning: MLflow logging stopped ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                flush=True,
            )
            self.enabled = False
            return None

    def start(self, run_id: str | None, name: str, tags: dict, config: dict, config_text: str) -> str | None:
        def go():
            import mlflow

            set_tracking(self.uri, experiment_name(self.experiment))
            if run_id:
                mlflow.start_run(run_id=run_id)
            else:
                mlflow.start_run(run_name=name, tags=tags | source_tags(versions()))
                mlflow.log_params(flat_params({"config": config}))
                mlflow.log_text(config_text, "config.yaml")
            return mlflow.active_run().info.run_id

        self.run_id = self._call(go)
        return self.run_id

    def metrics(self, values: dict, step: int) -> None:
        def go():
            import mlflow

            mlflow.log_metrics(values, step=step)

        self._call(go)

    def artifact(self, path: Path, folder: str | None = None) -> None:
        def go():
            import mlflow

            mlflow.log_artifact(str(path), folder)

        self._call(go)

    def json(self, data: dict, name: str) -> None:
        def go():
            import mlflow

            mlflow.log_dict(data, name)

        self._call(go)

    def register(self, name: str, alias: str | None, artifact_folder: str) -> str | None:
        """A new version of the registered model ``name`` from this run's ``artifact_folder``."""

        def go():
            import mlflow
            from mlflow.exceptions import MlflowException

            client = mlflow.MlflowClient()
            try:
                client.create_registered_model(name)
            except MlflowException:
                pass
            version = client.create_model_version(
                name, source=f"{mlflow.get_artifact_uri(artifact_folder)}", run_id=self.run_id
            )
            if alias:
                client.set_registered_model_alias(name, alias, version.version)
            return version.version

        return self._call(go)

    def end(self, status: str = "FINISHED") -> None:
        def go():
            import mlflow

            mlflow.end_run(status=status)

        self._call(go)


def end_active_run(status: str) -> None:
    """Mark the active run (if MLflow was ever imported and a run is open) with ``status``; a store that
    cannot be reached any more is ignored, the error that stopped the work is what matters."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        try:
            mlflow.end_run(status=status)
        except Exception:
            pass


# ----------------------------------------------------------------------------- reading runs back


class RunStore:
    """Read access to a tracking store's runs (MLflow's own entities: ``run.info``, ``run.data``)."""

    def __init__(self, tracking_uri: str | None):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.uri = set_tracking(tracking_uri, None)
        self._client = None

    @property
    def client(self):
        """MLflow's client, made on first use (making it creates a SQLite store that is not there)."""
        if self._client is None:
            import mlflow

            self._client = mlflow.MlflowClient()
        return self._client

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """MLflow's failures to read the store as one-line ``TrackingError``s."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as e:
            raise TrackingError(
                f"could not read runs from MLflow at {self.uri}: {str(e).splitlines()[0][:300]}"
            ) from None

    def experiment(self, name: str):
        return self.client.get_experiment_by_name(name)

    def experiment_names(self) -> list[str]:
        return sorted(e.name for e in self.client.search_experiments())

    def runs(self, experiment_ids: list[str], filter_string: str = "") -> list:
        import mlflow

        return mlflow.search_runs(
            experiment_ids=experiment_ids, filter_string=filter_string, output_format="list"
        )

    def run(self, run_id: str):
        """The run ``run_id``, or None when the store has no such run."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException:
            return None

    def artifact_names(self, run_id: str) -> set[str]:
        return {a.path for a in self.client.list_artifacts(run_id)}

    def download(self, run_id: str, path: str, folder: Path) -> Path:
        import mlflow

        return Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(folder))
        )

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))
