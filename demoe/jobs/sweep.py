"""A sweep file (``demoe-eval run -e experiments/X.yaml``): models x benchmarks x k, each an evaluation."""

from dataclasses import asdict
from pathlib import Path

from demoe.jobs.evaluate import EvalConfig
from demoe.runner.scoring import EvaluationError

SWEEP_KEYS = {"name", "models", "benches", "routing", "k", "metrics", "options"}


def expand_sweep(doc: dict, base: EvalConfig, source: str = "experiment file") -> list[EvalConfig]:
    """The evaluations of a sweep file: every model x benchmark x k, each with the file's routing modes.

    ``models`` items are zoo names or ``{name, checkpoint}``; ``options`` holds any EvalConfig field
    (limit, batch_size, split, ...). Values given on the command line for ``base`` are kept unless the file sets them.
    """
    unknown = set(doc) - SWEEP_KEYS
    if unknown or not doc.get("models") or not doc.get("benches"):
        raise EvaluationError(
            f"{source}: a sweep needs models and benches and knows only {', '.join(sorted(SWEEP_KEYS))}"
            + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else "")
        )
    options = dict(doc.get("options") or {})
    bad = set(options) - set(EvalConfig.__dataclass_fields__)
    if bad:
        raise EvaluationError(f"{source}: unknown options {', '.join(sorted(bad))}")
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
