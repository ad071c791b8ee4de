"""The schema every stage after the runner shares: what one image scored in one routing mode
(``ImageRecord``), what a routing mode scored over a benchmark (``ModeSummary``, each mean with its
confidence ``Interval``), two sets of scores compared image by image (``Comparison``) and a whole
evaluation with its configuration, protocol, statistics and provenance (``EvalResult``).

Each has ``to_json``/``from_json``: the JSON of ``records*.jsonl`` and ``results.json``. Readers use
the attributes, never the JSON's keys. ``results.json`` keeps everything measured with a clock in its
``timing`` field (seconds per image of each mode included), so that two identical evaluations write
the same file apart from that field.
"""

from dataclasses import dataclass, field

RECORD_FIELDS = ("mode", "name", "label", "seconds", "router_probs", "pred_task", "experts")


@dataclass(frozen=True)
class ImageRecord:
    mode: str
    name: str
    label: str | None  # the benchmark's task label of the image, None when it has none
    seconds: float  # forward seconds per image of its batch (0 for identity)
    scores: dict[str, float]  # metric name -> value
    router_probs: tuple[float, ...] | None = None  # the router's softmax over the tasks (models with one)
    pred_task: str | None = None  # the router's choice
    experts: tuple[tuple[int, ...], ...] | None = None  # the experts used, per MoE block

    @property
    def key(self) -> tuple[str, str]:
        return (self.mode, self.name)

    def to_json(self) -> dict:
        out = {"mode": self.mode, "name": self.name, "label": self.label, "seconds": self.seconds}
        out |= self.scores
        if self.router_probs is not None:
            out |= {
                "router_probs": list(self.router_probs),
                "pred_task": self.pred_task,
                "experts": [list(e) for e in self.experts or ()],
            }
        return out

    @classmethod
    def from_json(cls, data: dict) -> "ImageRecord":
        probs, experts = data.get("router_probs"), data.get("experts")
        return cls(
            mode=data["mode"],
            name=data["name"],
            label=data.get("label"),
            seconds=float(data.get("seconds") or 0.0),
            scores={k: v for k, v in data.items() if k not in RECORD_FIELDS},
            router_probs=tuple(probs) if probs is not None else None,
            pred_task=data.get("pred_task"),
            experts=tuple(tuple(e) for e in experts) if experts is not None else None,
        )


@dataclass
class Confusion:
    labels: list[str]
    matrix: list[list[int]]  # rows: the true task, columns: the router's choice

    def to_json(self) -> dict:
        return {"labels": self.labels, "rows_true_cols_predicted": self.matrix}

    @classmethod
    def from_json(cls, data: dict) -> "Confusion":
        return cls(list(data["labels"]), [list(row) for row in data["rows_true_cols_predicted"]])


@dataclass(frozen=True)
class Interval:
    """A confidence interval (of a mean, or of a mean difference)."""

    low: float
    high: float

    def to_json(self) -> list[float]:
        return [self.low, self.high]

    @classmethod
    def from_json(cls, data) -> "Interval | None":
        return None if data is None else cls(float(data[0]), float(data[1]))


@dataclass(frozen=True)
class Statistics:
    """How intervals and paired tests are made: a bootstrap over images (scipy.stats.bootstrap with
    ``method``, ``resamples`` resamples, a generator seeded with ``seed`` afresh for each interval) and
    scipy.stats.wilcoxon's two-sided signed-rank test on the per-image differences (zeros dropped)."""

    confidence: float = 0.95
    resamples: int = 10000
    method: str = "percentile"
    seed: int = 0
    paired_test: str = "wilcoxon signed-rank, two-sided, zero differences dropped"

    def to_json(self) -> dict:
        return dict(vars(self))

    @classmethod
    def from_json(cls, data: dict | None) -> "Statistics | None":
        if data is None:
            return None
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def describe(self) -> str:
        """One phrase for a table's note."""
        return (
            f"{self.confidence:.0%} bootstrap confidence interval ({self.method} method, {self.resamples} "
            f"resamples of the images, seed {self.seed})"
        )


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on the images both scored (routing modes of one run, or two runs):
    the mean of the per-image differences ``a - b`` of ``metric``, its bootstrap interval and the
    Wilcoxon signed-rank p-value. ``interval``/``p_wilcoxon`` are None where they cannot be had
    (fewer than 2 images, every difference zero): ``why_not`` says which."""

    a: str
    b: str
    metric: str
    images: int  # images paired (scored in both)
    mean_diff: float | None
    interval: Interval | None = None
    p_wilcoxon: float | None = None
    why_not: str | None = None

    @property
    def name(self) -> str:
        """``A_vs_B``: the prefix of its MLflow metrics."""
        return f"{self.a}_vs_{self.b}"

    def to_json(self) -> dict:
        out: dict = {"a": self.a, "b": self.b, "metric": self.metric, "images": self.images}
        out |= {"mean_diff": self.mean_diff, "interval": self.interval and self.interval.to_json()}
        out |= {"p_wilcoxon": self.p_wilcoxon}
        if self.why_not:
            out["why_not"] = self.why_not
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Comparison":
        return cls(
            a=data["a"],
            b=data["b"],
            metric=data["metric"],
            images=int(data["images"]),
            mean_diff=data.get("mean_diff"),
            interval=Interval.from_json(data.get("interval")),
            p_wilcoxon=data.get("p_wilcoxon"),
            why_not=data.get("why_not"),
        )


@dataclass
class ModeSummary:
    images: int
    metrics: dict[str, float]  # mean of each metric over the images that have it
    seconds_per_image: float | None = None  # None for identity
    routing_accuracy: float | None = None  # auto routing of labelled images
    confusion: Confusion | None = None
    expert_usage: dict[str, list[list[int]]] | None = None  # label -> per MoE block, per expert: images
    intervals: dict[str, Interval] = field(default_factory=dict)  # metric -> interval of its mean
    decisions: dict[str, int] | None = None  # the router's choice -> images (benchmarks without sharp images)

    def to_json(self) -> dict:
        out: dict = {"images": self.images, "metrics": dict(self.metrics)}
        if self.intervals:
            out["intervals"] = {name: ci.to_json() for name, ci in sorted(self.intervals.items())}
        if self.seconds_per_image is not None:
            out["seconds_per_image"] = self.seconds_per_image
        if self.routing_accuracy is not None:
            out["routing_accuracy"] = self.routing_accuracy
        if self.confusion is not None:
            out["confusion"] = self.confusion.to_json()
        if self.expert_usage is not None:
            out["expert_usage"] = self.expert_usage
        if self.decisions is not None:
            out["decisions"] = dict(self.decisions)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "ModeSummary":
        return cls(
            images=int(data["images"]),
            metrics=dict(data.get("metrics") or {}),
            seconds_per_image=data.get("seconds_per_image"),
            routing_accuracy=data.get("routing_accuracy"),
            confusion=Confusion.from_json(data["confusion"]) if data.get("confusion") else None,
            expert_usage=data.get("expert_usage"),
            intervals={k: Interval.from_json(v) for k, v in (data.get("intervals") or {}).items()},
            decisions=data.get("decisions"),
        )


@dataclass
class ModelInfo:
    arch: str
    kwargs: dict
    checkpoint: str | None
    checkpoint_sha256: str | None
    params: int
    checkpoint_param_key: str | None = None  # the file's entry the weights came from (params, params_ema)
    weights_cast: dict[str, int] = field(default_factory=dict)  # {"float16->float32": tensors} cast on load

    @property
    def k_used(self) -> int | None:
        return self.kwargs.get("k_used")


@dataclass
class BenchInfo:
    root: str
    pairs: int
    fingerprint: str
    task: str | None = None
    protocol_note: str | None = None
    skipped_bad_pairs: list[str] = field(default_factory=list)
    expected_pairs: int | None = None  # what the manifest declares for the split
    partial: bool = False  # fewer pairs were found than declared (scored with --allow-partial)
    unpaired: bool = False  # no sharp images: scored with no-reference metrics only (``pairs``: images)

    def to_json(self) -> dict:
        """Its fields; ``unpaired`` only where true, so that a paired benchmark's JSON is as it was."""
        out = vars(self).copy()
        if not self.unpaired:
            del out["unpaired"]
        return out


@dataclass
class Timing:
    setup_seconds: float
    wall_seconds: float
    forward_seconds: float
    world_size: int
    device: str
    threads: int
    workers: int


@dataclass
class EvalResult:
    run_name: str
    model: str
    bench: str
    split: str
    routing_modes: list[str]  # identity first, then the model's modes in the order they ran
    model_info: ModelInfo
    bench_info: BenchInfo
    protocol: dict  # how images were scored (colour, crop, quantisation, pyiqa version)
    metrics_unavailable: dict[str, str]  # metric -> why it was not computed
    results: dict[str, ModeSummary]  # routing mode -> its summary
    timing: Timing
    config: dict  # the resolved evaluation options
    versions: dict = field(default_factory=dict)  # provenance: package versions and commit
    statistics: Statistics | None = None  # how the intervals and comparisons were made (None: none made)
    comparisons: list[Comparison] = field(default_factory=list)  # routing modes compared image by image

    def summary(self, mode: str) -> ModeSummary | None:
        return self.results.get(mode)

    @property
    def metric_names(self) -> list[str]:
        return sorted({m for s in self.results.values() for m in s.metrics})

    def to_json(self) -> dict:
        """The JSON of ``results.json``: seconds per image of each mode go into ``timing``, so that
        nothing but ``timing`` depends on the clock."""
        results = {mode: s.to_json() for mode, s in self.results.items()}
        timing = vars(self.timing).copy()
        timing["seconds_per_image"] = {
            mode: summary.pop("seconds_per_image")
            for mode, summary in results.items()
            if "seconds_per_image" in summary
        }
        out = {
            "run_name": self.run_name,
            "model": self.model,
            "bench": self.bench,
            "split": self.split,
            "routing_modes": list(self.routing_modes),
            "model_info": vars(self.model_info).copy(),
            "bench_info": self.bench_info.to_json(),
            "protocol": dict(self.protocol),
            "metrics_unavailable": dict(self.metrics_unavailable),
            "results": results,
            "timing": timing,
            "config": dict(self.config),
            "versions": dict(self.versions),
        }
        if self.statistics is not None:
            out["statistics"] = self.statistics.to_json()
        if self.comparisons:
            out["comparisons"] = [c.to_json() for c in self.comparisons]
        return out

    @classmethod
    def from_json(cls, data: dict) -> "EvalResult":
        """Reads ``results.json`` of every version (older ones: seconds per image beside each mode's
        metrics, no statistics or comparisons)."""
        model_info = dict(data["model_info"])
        results = {mode: ModeSummary.from_json(s) for mode, s in data["results"].items()}
        for mode, seconds in (data["timing"].get("seconds_per_image") or {}).items():
            if mode in results:
                results[mode].seconds_per_image = seconds
        return cls(
            run_name=data.get("run_name") or f"{data['model']}@{data['bench']}",
            model=data["model"],
            bench=data["bench"],
            split=data["split"],
            routing_modes=list(data["routing_modes"]),
            model_info=ModelInfo(
                arch=model_info["arch"],
                kwargs=dict(model_info.get("kwargs") or {}),
                checkpoint=model_info.get("checkpoint"),
                checkpoint_sha256=model_info.get("checkpoint_sha256"),
                params=int(model_info.get("params") or 0),
                checkpoint_param_key=model_info.get("checkpoint_param_key"),
                weights_cast=dict(model_info.get("weights_cast") or {}),
            ),
            bench_info=BenchInfo(
                **{k: v for k, v in data["bench_info"].items() if k in BenchInfo.__dataclass_fields__}
            ),
            protocol=dict(data.get("protocol") or {}),
            metrics_unavailable=dict(data.get("metrics_unavailable") or {}),
            results=results,
            timing=Timing(**{k: v for k, v in data["timing"].items() if k in Timing.__dataclass_fields__}),
            config=dict(data.get("config") or {}),
            versions=dict(data.get("versions") or {}),
            statistics=Statistics.from_json(data.get("statistics")),
            comparisons=[Comparison.from_json(c) for c in data.get("comparisons") or []],
        )
