"""What every column of a report scored, and which columns compare with a benchmark's papers: notes made
from each run's recorded protocol (``metric_color`` and ``paper_protocol`` in its results.json)."""

from demoe.registry.benchmarks import PAPER_PROTOCOLS
from demoe.report.collect import EvalRun
from demoe.report.formats import metric_title, ordered_metrics

CHANNELS = {
    "rgb": "the RGB images",
    "y-yiq": "the Y of YIQ, pyiqa's",
    "y-ycbcr": "the Y of BT.601 YCbCr, BasicSR's and MATLAB's",
}


def channel_notes(evals: list[EvalRun]) -> list[str]:
    """One note naming the channels each metric scored (per benchmark where they differ), and one per
    benchmark whose manifest names its papers' protocol, saying which columns compare with them."""
    colors: dict[str, dict[str, set[str]]] = {}  # metric -> channels -> benchmarks
    papers: dict[str, str] = {}
    for run in evals:
        protocol = run.results.protocol if run.results is not None else {}
        for metric, color in (protocol.get("metric_color") or {}).items():
            colors.setdefault(metric, {}).setdefault(color, set()).add(run.bench)
        if protocol.get("paper_protocol") in PAPER_PROTOCOLS:
            papers.setdefault(run.bench, protocol["paper_protocol"])
    if not colors:
        return []
    parts = []
    for metric in ordered_metrics(colors):
        by_color = colors[metric]
        if len(by_color) == 1:
            parts.append(f"{metric_title(metric)} {next(iter(by_color))}")
        else:
            where = ", ".join(f"{c} ({', '.join(sorted(b))})" for c, b in sorted(by_color.items()))
            parts.append(f"{metric_title(metric)} {where}")
    used = sorted({c for by_color in colors.values() for c in by_color})
    legend = "; ".join(f"{c}: {CHANNELS.get(c, c)}" for c in used)
    notes = [f"Channels scored: {'; '.join(parts)} ({legend})."]
    for bench, paper in sorted(papers.items()):
        same = [m for m in PAPER_PROTOCOLS[paper] if bench in colors.get(m, {}).get(paper, set())]
        text = f"{bench}: its papers score PSNR and SSIM on {paper} ({CHANNELS[paper]})"
        if same:
            notes.append(f"{text}; the columns to compare: {', '.join(metric_title(m) for m in same)}.")
        else:
            notes.append(
                f"{text}; no column here does (demoe-eval run --metrics {','.join(PAPER_PROTOCOLS[paper])})."
            )
    return notes
