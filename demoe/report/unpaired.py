"""The report's section on benchmarks without sharp images: each benchmark's no-reference scores per
routing mode, the router's choices, and the comparison strips the runs saved.

Such runs stay out of the full-reference tables (quality, routing against oracle, per-image PSNR), where
every column of theirs would be empty; their expert usage is drawn with the others'.
"""

from collections.abc import Callable

from demoe.metrics.scorers import NEEDS_SHARP
from demoe.report import figures
from demoe.report.collect import EvalRun
from demoe.report.document import Figure, Section
from demoe.report.formats import (
    Column,
    Table,
    lower_better,
    metric_format,
    metric_title,
    ordered_metrics,
    slug,
)
from demoe.report.intervals import estimate, interval_note
from demoe.report.tables import routing_name
from demoe.vocab import AUTO, IDENTITY, TASKS
from demoe.vocab import TASK_SHORT as SHORT

STRIPS_SHOWN = 6  # per run; every strip is among the run's artifacts (strips/)


def quality_table(runs: list[EvalRun]) -> Table:
    """One benchmark's runs: per model and routing mode, the mean of each no-reference metric computed."""
    bench = runs[0].bench
    metrics = ordered_metrics(m for r in runs for result in r.modes.values() for m in result.metrics)
    columns = [Column("model", "Model"), Column("routing", "Routing"), Column("images", "Images")]
    columns += [Column(m, metric_title(m), "", metric_format(m), lower_better(m)) for m in metrics]
    columns.append(Column("seconds_per_image", "s/img", fmt="{:.4f}"))
    table = Table(f"unpaired__{slug(bench)}", f"{bench}: no-reference quality (no sharp images)", columns)
    floor = next((r.modes[IDENTITY] for r in runs if IDENTITY in r.modes), None)
    if floor is not None:
        table.add(["Blurred input", IDENTITY, floor.images, *[estimate(floor, m) for m in metrics], None])
    for run in sorted(runs, key=lambda r: r.label):
        for n, mode in enumerate(m for m in run.ordered_modes() if m != IDENTITY):
            result = run.modes[mode]
            row = [run.label, routing_name(run, mode), result.images, *[estimate(result, m) for m in metrics]]
            table.add([*row, result.seconds_per_image], ranked=True, rule=n == 0)
    table.notes += [
        "Best restored value per column in bold (↑ higher is better, ↓ lower is better, as pyiqa ranks them).",
        "identity: the blurred input scored with the same no-reference metrics, the floor to beat.",
        interval_note(runs),
    ]
    asked = sorted({m for r in runs for m, why in r.metrics_unavailable.items() if why == NEEDS_SHARP})
    table.notes.append(
        "PSNR, SSIM and LPIPS compare with sharp images, which this benchmark does not have"
        + (f": {', '.join(asked)} not computable." if asked else ".")
    )
    other = {(m, why) for r in runs for m, why in r.metrics_unavailable.items() if why != NEEDS_SHARP}
    table.notes += [f"{metric_title(m)}: not computed, {why}." for m, why in sorted(other)]
    return table


def _decisions(run: EvalRun) -> dict[str, int] | None:
    """How many images auto routing gave to each task: logged in results.json, else counted in the
    per-image table; None for a model without a router."""
    auto = run.summary(AUTO)
    if auto is not None and auto.decisions:
        return dict(auto.decisions)
    table = run.per_image
    if table is None or "pred_task" not in table.columns:
        return None
    chosen = table[table["mode"] == AUTO]["pred_task"].dropna()
    return {str(task): int(n) for task, n in chosen.value_counts().items()} or None


def decisions_table(runs: list[EvalRun]) -> Table | None:
    """Per run, the images auto routing gave to each task (the router's most probable one)."""
    columns = [Column("model", "Model"), Column("bench", "Benchmark"), Column("images", "Images")]
    columns += [Column(f"routed_{t}", SHORT[t], "Router's choice") for t in TASKS]
    table = Table("routing_decisions", "The router's choices on images without sharp references", columns)
    for run in sorted(runs, key=lambda r: (r.label, r.bench)):
        counts = _decisions(run)
        if counts:
            table.add([run.label, run.bench, sum(counts.values()), *[counts.get(t, 0) for t in TASKS]])
    table.notes.append(
        "Images per task the router chose with auto routing; with no sharp image (and no task label) "
        "there is no right answer to score it against: the strips show what each choice made."
    )
    return table if table.rows else None


def unpaired_section(runs: list[EvalRun], keep: Callable, figure: Callable) -> Section:
    """``keep`` records a table for the report; ``figure(make, name, caption)`` draws one (or None)."""
    section = Section(
        "Without sharp images",
        "unpaired",
        text=[
            "Benchmarks of blurred images alone (captures without ground truth): scored with no-reference "
            "metrics, with what the router chose for each image and the restorations side by side."
        ],
    )
    for bench in sorted({r.bench for r in runs}):
        section.items.append(keep(quality_table([r for r in runs if r.bench == bench])))
    choices = keep(decisions_table(runs))
    if choices is None:
        section.missing.append("The router's choices: no run without sharp images has a router.")
    section.items.append(choices)
    for run in runs:
        if not run.strips:
            section.missing.append(f"Comparison strips of {run.key}: none were logged.")
            continue
        shown = run.strips[:STRIPS_SHOWN]
        rows = [(png.stem.replace("__", "/"), [("", png)]) for png in shown]
        drawn: Figure | None = figure(
            lambda rows=rows, r=run: figures.image_grid_figure(rows, None, f"{r.label} on {r.bench}"),
            f"strips__{run.key}",
            f"{run.label} on {run.bench}: the blurred input and its restorations ({len(shown)} of "
            f"{len(run.strips)} images; all in the run's strips/ artifacts).",
        )
        section.items.append(drawn)
    return section
