"""Finished runs read back from MLflow as plain records: what every table and figure of a report is made of.

Which runs: an experiment's evaluations and finetunings, a sweep's evaluations (``-e FILE``: the latest
sweep run of that name), or runs named by id. When one (model, benchmark) was evaluated more than once,
the latest finished run stands for it and the others are listed as left out.
"""

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from demoe.config import load_config
from demoe.errors import DemoeError
from demoe.records import Comparison, EvalResult, Interval, ModeSummary, Statistics
from demoe.registry.build import build_model, model_stats
from demoe.registry.zoo import load_zoo, zoo_dirs
from demoe.tracking import run_metrics
from demoe.tracking.mlflow_runs import EVAL, FINETUNE, SWEEP, RunStore, check_server, experiment_name
from demoe.tracking.results import RESULTS_FILE, STRIPS, TABLE_STEM
from demoe.vocab import mode_rank


class ReportError(DemoeError):
    pass


@dataclass
class ModeResult:
    mode: str
    metrics: dict[str, float]
    images: int
    routing_accuracy: float | None = None
    seconds_per_image: float | None = None
    intervals: dict[str, Interval] = field(default_factory=dict)  # metric -> interval of its mean


@dataclass
class Costs:
    params: int | None = None
    active_params: int | None = None
    gflops: float | None = None


@dataclass
class EvalRun:
    run_id: str
    label: str  # the row name: model, "-kK" when k was set for the run, checkpoint hash when ambiguous
    model: str
    bench: str
    split: str
    k: int | None
    checkpoint_sha256: str
    bench_fingerprint: str
    start_time: int
    modes: dict[str, ModeResult]
    metrics_requested: list[str]
    metrics_unavailable: dict[str, str] = field(default_factory=dict)
    protocol_note: str | None = None
    results: EvalResult | None = None  # its results.json, None when not logged
    per_image: object | None = None  # pandas DataFrame of per_image.parquet, None when not logged
    samples: dict[str, dict[str, Path]] = field(default_factory=dict)  # image name -> {tag: PNG}
    costs: Costs = field(default_factory=Costs)
    experiment_id: str = ""
    statistics: Statistics | None = None  # how its intervals and comparisons were made (None: none logged)
    comparisons: dict[tuple[str, str, str], Comparison] = field(default_factory=dict)  # (a, b, metric) ->
    unpaired: bool = False  # a benchmark without sharp images: no-reference metrics, routing and strips
    strips: list[Path] = field(default_factory=list)  # its comparison strips, one PNG per image

    @property
    def key(self) -> str:
        return f"{self.label}@{self.bench}"

    def summary(self, mode: str) -> ModeSummary | None:
        """The logged summary of routing mode ``mode`` (None without results.json or without the mode)."""
        return self.results.summary(mode) if self.results is not None else None

    @property
    def has_router(self) -> bool:
        return self.results is not None and any(s.expert_usage for s in self.results.results.values())

    @property
    def labelled(self) -> bool:
        return self.per_image is not None and bool(self.per_image["label"].notna().any())

    def ordered_modes(self) -> list[str]:
        return sorted(self.modes, key=mode_rank)


@dataclass
class FinetuneRun:
    run_id: str
    name: str
    model: str | None
    start_time: int
    status: str
    tags: dict[str, str]  # the run's demoe.* tags (start model, training benchmark, ...)
    curves: dict[str, list[tuple[int, float]]]  # metric key -> (step, value) in step order
    experiment_id: str = ""


@dataclass
class Collection:
    source: str
    evals: list[EvalRun]
    finetunes: list[FinetuneRun]
    left_out: list[str] = field(default_factory=list)  # "run id (why)"
    ui_url: str | None = (
        None  # the tracking server's address, whose UI shows each run; None for a local store
    )

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}" if self.ui_url else None


@dataclass
class Selection:
    experiment: str | None = None
    run_ids: list[str] = field(default_factory=list)
    experiment_file: Path | None = None
    models: list[str] = field(default_factory=list)
    benches: list[str] = field(default_factory=list)


def collect(selection: Selection, download_dir: Path, tracking_uri: str | None = None) -> Collection:
    """The finished runs ``selection`` names, with their per-image tables and samples downloaded."""
    store = RunStore(tracking_uri)
    uri = store.uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ReportError(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}; run the report where `demoe-eval run` "
            "logged its runs, or pass --tracking-uri"
        )
    check_server(uri, write=False)
    with store.errors():
        return _collect(selection, Path(download_dir), store)


def _collect(selection: Selection, download_dir: Path, store: RunStore) -> Collection:
    if selection.run_ids:
        runs, source = _runs_by_id(store, selection.run_ids)
    else:
        experiment = _experiment(store, selection.experiment)
        runs = store.runs([experiment.experiment_id])
        source = f"experiment {experiment.name!r}"
        if selection.experiment_file is not None:
            runs, source = _sweep_runs(runs, selection.experiment_file, experiment.name)
    runs = [r for r in runs if r.info.status == "FINISHED"]
    parents = [r for r in runs if _tag(r, "demoe.kind") == EVAL and not _tag(r, "demoe.routing")]
    children = _children(store, runs, parents)
    evals = [_eval_run(r, children.get(r.info.run_id, [])) for r in parents]
    evals, left_out = _latest_per_key(
        _filtered(_disambiguated(_default_k_as_default(evals)), selection, source)
    )
    for run in evals:
        _download(store, run, download_dir / run.run_id)
    finetunes = [
        _finetune_run(store, r)
        for r in runs
        if _tag(r, "demoe.kind") == FINETUNE
        and not (selection.models and _tag(r, "demoe.model") not in selection.models)
    ]
    return Collection(
        source=f"{source} at {store.uri}",
        ui_url=store.uri.rstrip("/") if store.uri.startswith(("http://", "https://")) else None,
        evals=sorted(evals, key=lambda e: (e.label, e.bench)),
        finetunes=sorted(finetunes, key=lambda f: (f.name, f.run_id)),
        left_out=left_out,
    )


def _tag(run, name: str) -> str | None:
    return run.data.tags.get(name) or None


def _experiment(store: RunStore, name: str | None):
    name = experiment_name(name)
    experiment = store.experiment(name)
    if experiment is None:
        known = store.experiment_names()
        raise ReportError(
            f"--experiment {name}: no such experiment at {store.uri}; experiments there: "
            f"{', '.join(known) or 'none'}"
        )
    return experiment


def _runs_by_id(store: RunStore, run_ids: list[str]):
    selected = {}
    for run_id in run_ids:
        run = store.run(run_id)
        if run is None:
            raise ReportError(f"--runs {run_id}: no such run in the tracking store")
        kind, routing, parent = (
            _tag(run, "demoe.kind"),
            _tag(run, "demoe.routing"),
            _tag(run, "mlflow.parentRunId"),
        )
        if kind == EVAL and routing and parent:
            run = store.run(parent)
        elif kind not in (EVAL, FINETUNE, SWEEP):
            raise ReportError(f"--runs {run_id}: not a demoe-eval evaluation, sweep or finetuning run")
        selected[run.info.run_id] = run
        if kind == SWEEP:
            for child in store.runs(
                [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
            ):
                selected[child.info.run_id] = child
    return list(selected.values()), f"runs {', '.join(run_ids)}"


def _sweep_runs(runs: list, experiment_file: Path, experiment: str):
    doc = load_config(experiment_file)
    name = str(doc.get("name", Path(experiment_file).stem))
    sweeps = [
        r
        for r in runs
        if _tag(r, "demoe.kind") == SWEEP and r.info.run_name == name and r.info.status == "FINISHED"
    ]
    if not sweeps:
        raise ReportError(
            f"-e {experiment_file}: no sweep run named {name!r} in experiment {experiment!r}; "
            f"run `demoe-eval run -e {experiment_file}` first or pass --experiment"
        )
    sweep = max(sweeps, key=lambda r: (r.info.start_time, r.info.run_id))
    evals = {r.info.run_id for r in runs if _tag(r, "mlflow.parentRunId") == sweep.info.run_id}
    chosen = [r for r in runs if r.info.run_id in evals or _tag(r, "mlflow.parentRunId") in evals]
    return chosen, f"sweep {name!r} (run {sweep.info.run_id}) in experiment {experiment!r}"


def _children(store: RunStore, runs: list, parents: list) -> dict[str, list]:
    """Routing-mode child runs per parent id, searched for in the parents' experiments when not at hand."""
    known = {r.info.run_id for r in runs}
    have = {_tag(r, "mlflow.parentRunId") for r in runs if _tag(r, "demoe.routing")}
    missing = [p for p in parents if p.info.run_id not in have]
    extra = []
    for experiment_id in sorted({p.info.experiment_id for p in missing}):
        extra += store.runs([experiment_id], "tags.`demoe.kind` = 'eval'")
    out: dict[str, list] = {}
    for run in runs + [r for r in extra if r.info.run_id not in known]:
        parent = _tag(run, "mlflow.parentRunId")
        if _tag(run, "demoe.routing") and parent and run.info.status == "FINISHED":
            out.setdefault(parent, []).append(run)
    return out


def _filtered(evals: list[EvalRun], selection: Selection, source: str) -> list[EvalRun]:
    """Runs whose model (zoo name or row label) and benchmark are among those asked for."""
    for option, values, names_of in (
        ("--models", selection.models, lambda r: {r.model, r.label}),
        ("--benches", selection.benches, lambda r: {r.bench}),
    ):
        if not values:
            continue
        present = set().union(*(names_of(r) for r in evals)) if evals else set()
        absent = [v for v in values if v not in present]
        if absent:
            raise ReportError(
                f"{option} {','.join(absent)}: no finished evaluation in {source}; "
                f"it has {', '.join(sorted(present)) or 'none'}"
            )
        evals = [r for r in evals if names_of(r) & set(values)]
    return evals


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _eval_run(parent, children: list) -> EvalRun:
    modes = {}
    for child in sorted(children, key=lambda c: (c.info.start_time, c.info.run_id)):
        metrics = child.data.metrics
        mode = _tag(child, "demoe.routing")
        means, intervals = run_metrics.means_and_intervals(metrics)
        modes[mode] = ModeResult(
            mode=mode,
            metrics=means,
            images=int(metrics.get("images", 0)),
            routing_accuracy=metrics.get("routing_accuracy"),
            seconds_per_image=metrics.get("seconds_per_image"),
            intervals=intervals,
        )
    config_k = _int_or_none(parent.data.params.get("config.k"))
    model = _tag(parent, "demoe.model") or parent.info.run_name
    unavailable = _unavailable_from_tag(_tag(parent, "demoe.metrics_unavailable") or "")
    requested = sorted({m for r in modes.values() for m in r.metrics} | set(unavailable))
    return EvalRun(
        run_id=parent.info.run_id,
        experiment_id=parent.info.experiment_id,
        label=f"{model}-k{config_k}" if config_k else model,
        model=model,
        bench=_tag(parent, "demoe.bench") or "?",
        split=_tag(parent, "demoe.split") or "",
        k=_int_or_none(_tag(parent, "demoe.k_used")),
        checkpoint_sha256=_tag(parent, "demoe.checkpoint_sha256") or "none",
        bench_fingerprint=_tag(parent, "demoe.bench_fingerprint") or "",
        start_time=parent.info.start_time or 0,
        modes=modes,
        metrics_requested=requested,
        metrics_unavailable=unavailable,
        protocol_note=_tag(parent, "demoe.protocol_note"),
        costs=Costs(params=_int_or_none(_tag(parent, "demoe.params"))),
        statistics=_statistics(parent.data.params),
        comparisons=run_metrics.comparisons(parent.data.metrics),
        unpaired=_tag(parent, "demoe.unpaired") == "true",
    )


def _statistics(params: dict[str, str]) -> Statistics | None:
    """The ``stats.*`` params of a parent run (None for runs logged before intervals)."""
    given = {k.removeprefix("stats."): v for k, v in params.items() if k.startswith("stats.")}
    if not given:
        return None
    kinds = {name: type(f.default) for name, f in Statistics.__dataclass_fields__.items()}
    try:
        return Statistics(**{k: kinds[k](v) for k, v in given.items() if k in kinds})
    except ValueError:
        return None


def _unavailable_from_tag(text: str) -> dict[str, str]:
    """``name: reason; name: reason`` as logged; reasons may hold "; " themselves (results.json is exact)."""
    starts = list(re.finditer(r"(?:^|; )([a-z0-9][a-z0-9_-]*): ", text))
    return {
        m.group(1): text[m.end() : starts[i + 1].start() if i + 1 < len(starts) else len(text)]
        for i, m in enumerate(starts)
    }


def _default_k_as_default(evals: list[EvalRun]) -> list[EvalRun]:
    """A run given the k that its model and checkpoint run with anyway (a sweep's k=1 of a top-1 model)
    is that model's default evaluation: it gets the default run's label, so that only the latest of
    the two is shown."""
    default_k = {(r.model, r.checkpoint_sha256): r.k for r in evals if r.label == r.model}
    return [
        replace(run, label=run.model)
        if run.label != run.model and default_k.get((run.model, run.checkpoint_sha256), -1) == run.k
        else run
        for run in evals
    ]


def _disambiguated(evals: list[EvalRun]) -> list[EvalRun]:
    """Label runs of one model name made with different checkpoints by the checkpoint's hash."""
    shas: dict[str, set[str]] = {}
    for run in evals:
        shas.setdefault(run.label, set()).add(run.checkpoint_sha256)
    return [
        replace(run, label=f"{run.label} [{run.checkpoint_sha256[:8]}]") if len(shas[run.label]) > 1 else run
        for run in evals
    ]


def _latest_per_key(evals: list[EvalRun]) -> tuple[list[EvalRun], list[str]]:
    latest: dict[str, EvalRun] = {}
    for run in sorted(evals, key=lambda e: (e.start_time, e.run_id)):
        latest[run.key] = run
    kept = {id(r) for r in latest.values()}
    left_out = [
        f"{r.run_id} ({r.key}: a later run of the same model and benchmark is shown)"
        for r in sorted(evals, key=lambda e: (e.key, e.start_time, e.run_id))
        if id(r) not in kept
    ]
    return list(latest.values()), left_out


def _download(store: RunStore, run: EvalRun, folder: Path) -> None:
    import pandas as pd

    names = store.artifact_names(run.run_id)
    folder.mkdir(parents=True, exist_ok=True)

    def fetch(path: str) -> Path:
        return store.download(run.run_id, path, folder)

    if RESULTS_FILE in names:
        run.results = EvalResult.from_json(json.loads(fetch(RESULTS_FILE).read_text(encoding="utf-8")))
        run.metrics_unavailable = dict(sorted(run.results.metrics_unavailable.items()))
        run.metrics_requested = sorted(
            {m for r in run.modes.values() for m in r.metrics} | set(run.metrics_unavailable)
        )
    if f"{TABLE_STEM}.parquet" in names:
        table = pd.read_parquet(fetch(f"{TABLE_STEM}.parquet"))
        run.per_image = table.sort_values(["mode", "name"], kind="stable").reset_index(drop=True)
    if STRIPS in names:
        run.strips = sorted(fetch(STRIPS).glob("*.png"))
    if "samples" in names:
        for png in sorted(fetch("samples").glob("*.png")):
            stem, _, tag = png.stem.rpartition("__")
            if stem:
                run.samples.setdefault(stem.replace("__", "/"), {})[tag] = png


def _finetune_run(store: RunStore, run) -> FinetuneRun:
    curves = {key: store.history(run.info.run_id, key) for key in sorted(run.data.metrics)}
    return FinetuneRun(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        name=run.info.run_name or run.info.run_id,
        model=_tag(run, "demoe.model"),
        start_time=run.info.start_time or 0,
        status=run.info.status,
        tags={k: v for k, v in sorted(run.data.tags.items()) if k.startswith("demoe.")},
        curves=curves,
    )


def model_costs(run: EvalRun, zoo: dict) -> Costs:
    """Total and active parameters (the top-k experts of each MoE block) and GFLOPs at 256x256 of ``run``'s model."""
    entry = zoo.get(run.model)
    if entry is None:
        return run.costs
    if run.k is not None and entry.kwargs.get("k_used", run.k) != run.k:
        # another k is another FLOP count: the entry's shipped stats are for its own k
        entry = replace(entry, kwargs={**entry.kwargs, "k_used": run.k}, stats={})
    stats = model_stats(entry)
    model = build_model(entry)
    inactive = 0
    for block in getattr(model, "experts", []):
        per_expert = sum(p.numel() for p in block.experts[0].parameters())
        inactive += per_expert * (block.num_experts - block.used)
    return Costs(params=stats["params"], active_params=stats["params"] - inactive, gflops=stats["gflops"])


def add_costs(collection: Collection, extra_zoo_dirs: list[Path] | tuple = ()) -> dict:
    """Fill each evaluation's costs from the zoo; returns the zoo entries' published figures by row label."""
    entries = load_zoo(zoo_dirs(extra_zoo_dirs))
    for run in collection.evals:
        run.costs = model_costs(run, entries)
    return {
        r.label: entries[r.model].paper
        for r in collection.evals
        if r.label == r.model and r.model in entries and entries[r.model].paper
    }
