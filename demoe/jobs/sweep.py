"""A sweep file (``demoe-eval run -e experiments/X.yaml``): models x benchmarks x k, each an evaluation."""

from dataclasses import asdict
from pathlib import Path

from demoe.jobs.evaluate import EvalConfig
from demoe.runner.scoring import EvaluationError

SWEEP_KEYS = {"name", "models", "benches", "routing", "k", "metrics", "options"}


def _names(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


def sweep_problems(doc) -> list[str]:
    """Everything wrong with a sweep file at once, each naming its key and the form it takes."""
    if not isinstance(doc, dict):
        return ["a sweep file is a mapping of " + ", ".join(sorted(SWEEP_KEYS))]
    problems = [
        f"unknown key {key!r} (known: {', '.join(sorted(SWEEP_KEYS))})"
        for key in doc
        if key not in SWEEP_KEYS
    ]
    models = doc.get("models")
    if not (
        isinstance(models, list)
        and models
        and all(
            (isinstance(m, str) and m)
            or (isinstance(m, dict) and isinstance(m.get("name"), str) and set(m) <= {"name", "checkpoint"})
            for m in models
        )
    ):
        problems.append(f"models {models!r} must be a list of zoo names or {{name, checkpoint}} mappings")
    if not _names(doc.get("benches")):
        problems.append(f"benches {doc.get('benches')!r} must be a list of benchmark names or folders")
    for key in ("routing", "metrics"):
        if key in doc and not _names(doc[key]):
            problems.append(f"{key} {doc[key]!r} must be a list of names")
    ks = doc.get("k")
    if ks is not None and not all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 1
        for k in (ks if isinstance(ks, list) else [ks])
    ):
        problems.append(f"k {ks!r} must be a positive integer or a list of them")
    options = doc.get("options") or {}
    if not isinstance(options, dict):
        problems.append("options must be a mapping of run options, e.g. {limit: 10}")
    else:
        problems += [
            f"unknown option {key!r} under options"
            for key in options
            if key not in EvalConfig.__dataclass_fields__
        ]
    return problems


def expand_sweep(doc: dict, base: EvalConfig, source: str = "experiment file") -> list[EvalConfig]:
    """The evaluations of a sweep file: every model x benchmark x k, each with the file's routing modes.

    ``models`` items are zoo names or ``{name, checkpoint}``; ``options`` holds any EvalConfig field
    (limit, batch_size, split, ...). Values given on the command line for ``base`` are kept unless the file sets them.
    """
    problems = sweep_problems(doc)
    if problems:
        raise EvaluationError(f"{source}: " + "; ".join(problems))
    options = dict(doc.get("options") or {})
    ks = doc.get("k") or [None]
    ks = ks if isinstance(ks, list) else [ks]
    sweep_name = str(doc.get("name", "sweep"))
    configs = []
    for item in doc["models"]:
        model = item if isinstance(item, dict) else {"name": item}
        for bench in doc["benches"]:
            for k in ks:
                tag = f"{model['name']}{f'-k{k}' if k else ''}@{bench.replace('/', '-')}"
                fields = {**asdict(base), **options}
                fields.update(
                    model=model["name"],
                    checkpoint=model.get("checkpoint", base.checkpoint),
                    bench=bench,
                    k=k if k is not None else base.k,
                    out=Path(base.out or Path("results") / sweep_name) / tag,
                )
                if doc.get("routing"):
                    fields["routing"] = list(doc["routing"])
                if doc.get("metrics"):
                    fields["metrics"] = list(doc["metrics"])
                configs.append(EvalConfig(**fields))
    return configs
