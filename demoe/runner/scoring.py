"""The runner: a model x batches of pairs x routing modes -> per-image ``ImageRecord``s.

It knows nothing of files or MLflow: batches come from a DataLoader the caller made, scores from the
metric set the caller passes, and records go back to the caller (who appends them to its results
folder). ``run`` restores through ``inference.restore`` (tiles, precision, the prepared fast path);
finetuning's validation calls the model plainly, as it trains on.
"""

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from demoe.errors import DemoeError
from demoe.metrics.summary import summarize
from demoe.net import has_router
from demoe.records import ImageRecord, ModeSummary
from demoe.runner import inference
from demoe.vocab import IDENTITY, MODEL_MODES, ORACLE, TASKS


class EvaluationError(DemoeError):
    pass


@dataclass(frozen=True)
class RestoreOptions:
    """How ``run`` restores an image: tiles above ``tile`` px, autocast precision."""

    tile: int | None = None
    tile_overlap: int = 32
    precision: str = "fp32"


@dataclass
class Batch:
    blurred: torch.Tensor  # (B, 3, H, W) in [0, 1]
    sharp: torch.Tensor | None  # None: a benchmark without sharp images (no-reference metrics only)
    names: list[str]
    labels: torch.Tensor  # (B,) task indices, -1 where a pair has no label


@dataclass
class ScoredBatch:
    batch: Batch
    records: list[ImageRecord]
    restored: dict[str, torch.Tensor] = field(default_factory=dict)  # model mode -> restored batch


def parse_routing(value: str | None, bench_label_available: bool, has_router: bool) -> list[str]:
    """The model routing modes to run, from ``--routing`` (``None`` means the default)."""
    if not has_router:
        if value not in (None, "auto"):
            raise EvaluationError("--routing: this model has no router or experts; only 'auto' applies")
        return ["auto"]
    if value is None:
        return ["auto", "oracle"] if bench_label_available else ["auto"]
    modes = []
    for item in (v.strip() for v in value.split(",") if v.strip()):
        expanded = list(MODEL_MODES) if item == "all" else [item]
        for mode in expanded:
            if mode not in MODEL_MODES:
                raise EvaluationError(
                    f"--routing: unknown mode {mode!r}; use auto, oracle, all or a task: {', '.join(TASKS)}"
                )
            if mode == ORACLE and not bench_label_available:
                if item == "all":
                    continue
                raise EvaluationError(
                    "--routing oracle: this benchmark has no task labels to force; use auto or a task name"
                )
            if mode not in modes:
                modes.append(mode)
    return modes


def size_batches(sizes: list[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of images of equal size (order within a size kept)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, size in enumerate(sizes):
        groups[size].append(i)
    batches = []
    for size in sorted(groups):
        idx = groups[size]
        batches += [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    return sorted(batches, key=lambda b: b[0])


def collate_pairs(items):
    blurred, sharp, names, labels = zip(*items, strict=True)
    sharp = None if sharp[0] is None else torch.stack(sharp)
    return torch.stack(blurred), sharp, list(names), torch.tensor(labels)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forward(model, batch: Batch, mode: str, restore: RestoreOptions | None) -> dict:
    task = batch.labels if mode == ORACLE else mode
    if restore is None:
        return model(batch.blurred, task=task)
    return inference.restore(
        model,
        batch.blurred,
        task,
        tile=restore.tile,
        overlap=restore.tile_overlap,
        precision=restore.precision,
    )


def router_view(model, routed: dict | None, i: int) -> dict:
    """What the router made of sample ``i`` of a forward's outputs: ``router_probs`` (its softmax over
    the tasks, also where a task was forced), ``pred_task`` (the most probable) and ``experts`` (per MoE
    block, the experts whose gate was non-zero); empty for a model without a router."""
    if routed is None or "router_logits" not in routed:
        return {}
    probs = torch.softmax(routed["router_logits"][i].float(), dim=0)
    gate = routed["pred_labels"][i]
    chosen = tuple(sorted(int(e) for e in gate.topk(model.k_used).indices if gate[e] > 0))
    return {
        "router_probs": tuple(round(float(p), 6) for p in probs),
        "pred_task": TASKS[int(probs.argmax())],
        "experts": (chosen,) * len(model.experts),
    }


def _record(model, batch: Batch, i: int, mode: str, seconds: float, scores: dict, routed) -> ImageRecord:
    label_index = int(batch.labels[i])
    router = router_view(model, routed, i)
    return ImageRecord(
        mode=mode,
        name=batch.names[i],
        label=TASKS[label_index] if label_index >= 0 else None,
        seconds=seconds,
        scores={m: float(v[i]) for m, v in scores.items()},
        **router,
    )


def score_batch(
    model,
    batch: Batch,
    modes: list[str],
    metrics,
    restore: RestoreOptions | None = None,
    skip: set | frozenset = frozenset(),
    restore_anyway: set | frozenset = frozenset(),
) -> ScoredBatch:
    """Restore one batch in every routing mode and score it. Records in ``skip`` (mode, name) are not
    made again; a batch holding a name of ``restore_anyway`` is restored in every mode all the same
    (its samples are to be saved)."""
    scored = ScoredBatch(batch, [])
    device = batch.blurred.device
    for mode in modes:
        pending = [i for i, n in enumerate(batch.names) if (mode, n) not in skip]
        if not pending and not restore_anyway.intersection(batch.names):
            continue
        if mode == IDENTITY:
            restored, routed, seconds = batch.blurred, None, 0.0
        else:
            _sync(device)
            t0 = time.perf_counter()
            routed = _forward(model, batch, mode, restore)
            _sync(device)
            seconds = (time.perf_counter() - t0) / len(batch.names)
            restored = scored.restored[mode] = routed["output"]
        scores = metrics(restored.float().clamp(0, 1), batch.sharp)
        scored.records += [_record(model, batch, i, mode, seconds, scores, routed) for i in pending]
    return scored


def score_loader(
    model,
    loader,
    modes: list[str],
    metrics,
    device: torch.device,
    restore: RestoreOptions | None = None,
    skip: set | frozenset = frozenset(),
    restore_anyway: set | frozenset = frozenset(),
) -> Iterator[ScoredBatch]:
    """``score_batch`` over every batch of ``loader`` (blurred, sharp, names, labels), in inference mode."""
    with torch.inference_mode():
        for blurred, sharp, names, labels in loader:
            if sharp is not None:
                sharp = sharp.to(device, non_blocking=True)
            batch = Batch(blurred.to(device, non_blocking=True), sharp, names, labels)
            yield score_batch(model, batch, modes, metrics, restore, skip, restore_anyway)


def num_moe_blocks(model) -> int | None:
    return len(model.experts) if has_router(model) else None


def validate(model, loader, metrics, modes: list[str], device: torch.device) -> dict[str, ModeSummary]:
    """Score ``model`` on every batch of ``loader`` in ``modes``: finetuning's validation, whose figures
    are ``run``'s. The model is put in eval mode for it and back in its mode after."""
    was_training = model.training
    model.eval()
    records = [r for scored in score_loader(model, loader, modes, metrics, device) for r in scored.records]
    model.train(was_training)
    unique = {r.key: r for r in reversed(records)}
    return summarize([unique[k] for k in sorted(unique)], metrics.available, num_moe_blocks(model))
