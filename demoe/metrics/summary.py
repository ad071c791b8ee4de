"""Per routing mode, what the per-image records add up to: mean metrics (with their confidence
intervals when asked), seconds per image, the router's accuracy and confusion (auto routing of
labelled images), expert usage per MoE block; and routing modes compared image by image."""

from collections import defaultdict

from demoe.metrics.stats import compare, mean_interval
from demoe.records import Comparison, Confusion, ImageRecord, ModeSummary, Statistics
from demoe.vocab import AUTO, IDENTITY, ORACLE, TASK_INDEX, TASKS, mode_rank


def expert_usage(records: list[ImageRecord], num_blocks: int) -> dict[str, list[list[int]]]:
    """Label (``unlabelled`` without one) -> per MoE block, how many images used each expert."""
    usage: dict[str, list[list[int]]] = {}
    for r in records:
        counts = usage.setdefault(r.label or "unlabelled", [[0] * len(TASKS) for _ in range(num_blocks)])
        for block, experts in enumerate(r.experts or ()):
            for e in experts:
                counts[block][e] += 1
    return dict(sorted(usage.items()))


def decisions(records: list[ImageRecord]) -> dict[str, int] | None:
    """The router's choice (tasks in the experts' order) -> how many of ``records`` it was made for;
    None where no record carries one (identity, a model without a router)."""
    counts = {task: sum(r.pred_task == task for r in records) for task in TASKS}
    return {task: n for task, n in counts.items() if n} or None


def confusion(records: list[ImageRecord]) -> Confusion:
    matrix = [[0] * len(TASKS) for _ in TASKS]
    for r in records:
        matrix[TASK_INDEX[r.label]][TASK_INDEX[r.pred_task]] += 1
    return Confusion(list(TASKS), matrix)


def summarize_mode(
    mode: str,
    rows: list[ImageRecord],
    metric_names: list[str],
    num_blocks: int | None,
    statistics: Statistics | None = None,
) -> ModeSummary:
    means, intervals = {}, {}
    for name in metric_names:
        values = [r.scores[name] for r in rows if r.scores.get(name) is not None]
        if values:
            means[name] = sum(values) / len(values)
            interval = mean_interval(values, statistics) if statistics is not None else None
            if interval is not None:
                intervals[name] = interval
    summary = ModeSummary(images=len(rows), metrics=means, intervals=intervals)
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
    records: list[ImageRecord],
    metric_names: list[str],
    num_blocks: int | None,
    statistics: Statistics | None = None,
) -> dict[str, ModeSummary]:
    """The ``ModeSummary`` of every routing mode among ``records``, by mode name; each mean with its
    bootstrap interval when ``statistics`` says how to make them."""
    by_mode: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_mode[r.mode].append(r)
    return {
        mode: summarize_mode(mode, rows, metric_names, num_blocks, statistics)
        for mode, rows in sorted(by_mode.items())
    }


def mode_pairs(modes: list[str]) -> list[tuple[str, str]]:
    """Which routing modes are compared image by image: auto against oracle, every model mode against
    identity (the blurred input)."""
    pairs = [(AUTO, ORACLE)] if AUTO in modes and ORACLE in modes else []
    if IDENTITY in modes:
        pairs += [(mode, IDENTITY) for mode in modes if mode != IDENTITY]
    return pairs


def compare_modes(
    records: list[ImageRecord], metric_names: list[str], statistics: Statistics
) -> list[Comparison]:
    """Each pair of ``mode_pairs`` compared on every metric, on the images both modes scored."""
    scores: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in records:
        scores[r.mode][r.name] = r.scores
    modes = sorted(scores, key=mode_rank)
    out = []
    for a, b in mode_pairs(modes):
        names = sorted(scores[a].keys() & scores[b].keys())
        for metric in metric_names:
            pairs = [(scores[a][n].get(metric), scores[b][n].get(metric)) for n in names]
            if any(x is not None and y is not None for x, y in pairs):
                out.append(compare(a, b, metric, pairs, statistics))
    return out
