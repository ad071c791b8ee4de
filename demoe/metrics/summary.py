"""Per routing mode, what the per-image records add up to: mean metrics, seconds per image, the
router's accuracy and confusion (auto routing of labelled images), expert usage per MoE block."""

from collections import defaultdict

from demoe.records import Confusion, ImageRecord, ModeSummary
from demoe.vocab import AUTO, IDENTITY, TASK_INDEX, TASKS


def expert_usage(records: list[ImageRecord], num_blocks: int) -> dict[str, list[list[int]]]:
    """Label (``unlabelled`` without one) -> per MoE block, how many images used each expert."""
    usage: dict[str, list[list[int]]] = {}
    for r in records:
        counts = usage.setdefault(r.label or "unlabelled", [[0] * len(TASKS) for _ in range(num_blocks)])
        for block, experts in enumerate(r.experts or ()):
            for e in experts:
                counts[block][e] += 1
    return dict(sorted(usage.items()))


def confusion(records: list[ImageRecord]) -> Confusion:
    matrix = [[0] * len(TASKS) for _ in TASKS]
    for r in records:
        matrix[TASK_INDEX[r.label]][TASK_INDEX[r.pred_task]] += 1
    return Confusion(list(TASKS), matrix)


def summarize_mode(
    mode: str, rows: list[ImageRecord], metric_names: list[str], num_blocks: int | None
) -> ModeSummary:
    means = {}
    for name in metric_names:
        values = [r.scores[name] for r in rows if r.scores.get(name) is not None]
        if values:
            means[name] = sum(values) / len(values)
    summary = ModeSummary(images=len(rows), metrics=means)
    if mode != IDENTITY:
        summary.seconds_per_image = sum(r.seconds for r in rows) / len(rows)
    labelled = [r for r in rows if r.pred_task is not None and r.label is not None]
    if mode == AUTO and labelled:
        summary.routing_accuracy = sum(r.pred_task == r.label for r in labelled) / len(labelled)
        summary.confusion = confusion(labelled)
    if num_blocks and mode != IDENTITY:
        summary.expert_usage = expert_usage(rows, num_blocks) or None
    return summary


def summarize(
    records: list[ImageRecord], metric_names: list[str], num_blocks: int | None
) -> dict[str, ModeSummary]:
    """The ``ModeSummary`` of every routing mode among ``records``, by mode name."""
    by_mode: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_mode[r.mode].append(r)
    return {
        mode: summarize_mode(mode, rows, metric_names, num_blocks) for mode, rows in sorted(by_mode.items())
    }
