"""The schema every stage after the runner shares: what one image scored in one routing mode
(``ImageRecord``), what a routing mode scored over a benchmark (``ModeSummary``) and a whole evaluation
with its configuration, protocol and provenance (``EvalResult``).

Each has ``to_json``/``from_json``: the JSON of ``records*.jsonl`` and ``results.json``. Readers use
the attributes, never the JSON's keys.
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


@dataclass
class ModeSummary:
    images: int
    metrics: dict[str, float]  # mean of each metric over the images that have it
    seconds_per_image: float | None = None  # None for identity
    routing_accuracy: float | None = None  # auto routing of labelled images
    confusion: Confusion | None = None
    expert_usage: dict[str, list[list[int]]] | None = None  # label -> per MoE block, per expert: images

    def to_json(self) -> dict:
        out: dict = {"images": self.images, "metrics": dict(self.metrics)}
        if self.seconds_per_image is not None:
            out["seconds_per_image"] = self.seconds_per_image
        if self.routing_accuracy is not None:
            out["routing_accuracy"] = self.routing_accuracy
        if self.confusion is not None:
            out["confusion"] = self.confusion.to_json()
        if self.expert_usage is not None:
            out["expert_usage"] = self.expert_usage
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
        )


@dataclass
class ModelInfo:
    arch: str
    kwargs: dict
    checkpoint: str | None
    checkpoint_sha256: str | None
    params: int

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

    def summary(self, mode: str) -> ModeSummary | None:
        return self.results.get(mode)

    @property
    def metric_names(self) -> list[str]:
        return sorted({m for s in self.results.values() for m in s.metrics})

    def to_json(self) -> dict:
        return {
            "run_name": self.run_name,
            "model": self.model,
            "bench": self.bench,
            "split": self.split,
            "routing_modes": list(self.routing_modes),
            "model_info": vars(self.model_info).copy(),
            "bench_info": vars(self.bench_info).copy(),
            "protocol": dict(self.protocol),
            "metrics_unavailable": dict(self.metrics_unavailable),
            "results": {mode: s.to_json() for mode, s in self.results.items()},
            "timing": vars(self.timing).copy(),
            "config": dict(self.config),
            "versions": dict(self.versions),
        }

    @classmethod
    def from_json(cls, data: dict) -> "EvalResult":
        model_info = dict(data["model_info"])
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
            ),
            bench_info=BenchInfo(
                **{k: v for k, v in data["bench_info"].items() if k in BenchInfo.__dataclass_fields__}
            ),
            protocol=dict(data.get("protocol") or {}),
            metrics_unavailable=dict(data.get("metrics_unavailable") or {}),
            results={mode: ModeSummary.from_json(s) for mode, s in data["results"].items()},
            timing=Timing(**{k: v for k, v in data["timing"].items() if k in Timing.__dataclass_fields__}),
            config=dict(data.get("config") or {}),
            versions=dict(data.get("versions") or {}),
        )
