"""The whole report folder: collect the runs, make tables and figures, write every asked-for format.

Layout of ``out``: ``report.md``, ``report.html`` (self-contained), ``tables/NAME.{md,tex,csv}``,
``figures/NAME.{png,svg}``. A second report of the same runs writes the same bytes.
"""

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from demoe.config import load_config
from demoe.data.samples import photo_of
from demoe.fileio import atomic_write_text
from demoe.metrics import figures as routing_figures
from demoe.report import figures, tables
from demoe.report import formats as table_formats
from demoe.report.collect import Collection, EvalRun, ReportError, Selection, add_costs, collect
from demoe.report.document import Figure, Row, Section, render_markdown
from demoe.report.formats import Table
from demoe.report.html import render_html
from demoe.report.published import add_published_rows, published_results
from demoe.report.unpaired import unpaired_section
from demoe.tracking.mlflow_runs import experiment_name
from demoe.vocab import TASK_SHORT as SHORT
from demoe.vocab import task_order

FORMATS = ("md", "html", "tex", "csv")
MARKER = ".demoe-report"
WILD_PREFIX = "wild/"
GRID_IMAGES_PER_TASK = 2


@dataclass
class Report:
    out: Path
    collection: Collection
    tables: list[Table]
    files: list[Path] = field(default_factory=list)

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)


def default_out(selection: Selection) -> Path:
    """``reports/NAME``: the sweep's name, the experiment's, or ``runs`` for runs named by id."""
    if selection.experiment_file is not None:
        name = str(load_config(selection.experiment_file).get("name", Path(selection.experiment_file).stem))
    elif selection.run_ids:
        name = "runs"
    else:
        name = experiment_name(selection.experiment)
    return Path("reports") / table_formats.slug(name)


def parse_formats(value: str | None) -> list[str]:
    formats = [f.strip() for f in (value or ",".join(FORMATS)).split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ReportError(f"--format {value}: use a comma list of {', '.join(FORMATS)}")
    return formats


def build_report(
    selection: Selection,
    out: Path,
    formats: list[str] | tuple[str, ...] = FORMATS,
    tracking_uri: str | None = None,
    zoo_dirs: list[Path] | tuple = (),
    bench_dirs: list[Path] | tuple = (),
) -> Report:
    """Read the runs ``selection`` names and write the report into ``out`` (replacing an earlier report there)."""
    out = Path(out)
    _check_out(out)
    with tempfile.TemporaryDirectory(prefix="demoe-report-") as downloads:
        collection = collect(selection, Path(downloads), tracking_uri)
        if not collection.evals and not collection.finetunes:
            raise ReportError(
                f"no finished evaluation or finetuning run in {collection.source}; "
                "run `demoe-eval run` first, or choose runs with --experiment, --runs or -e"
            )
        _clear(out)
        paper = add_costs(collection, zoo_dirs)
        draw = "md" in formats or "html" in formats
        published = published_results((r.bench for r in collection.evals), bench_dirs)
        sections, all_tables = _sections(collection, paper, out, draw, published)
        report = Report(out, collection, all_tables)
        report.files += _write(report, sections, formats)
    atomic_write_text(
        out / MARKER,
        "A report written by `demoe-eval report`; the command replaces this folder's contents.\n",
    )
    return report


def _check_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ReportError(
            f"--out {out}: exists and holds files that are not a demoe-eval report; choose another folder"
        )


def _clear(out: Path) -> None:
    """Remove what an earlier report wrote into ``out``, so no stale table or figure survives."""
    for name in ("tables", "figures"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("report.md", "report.html"):
        (out / name).unlink(missing_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)


def _figure(fig, out: Path, name: str, caption: str) -> Figure:
    path = Path("figures") / f"{table_formats.slug(name)}.png"
    routing_figures.save_figure(fig, out / path)
    return Figure(path, caption)


def _sections(
    collection: Collection, paper: dict, out: Path, draw: bool, published: dict | None = None
) -> tuple[list[Section], list[Table]]:
    evals = collection.evals
    made: list[Table] = []

    def keep(table: Table | None) -> Table | None:
        if table is not None:
            made.append(table)
        return table

    def figure(make, name: str, caption: str) -> Figure | None:
        return _figure(make(), out, name, caption) if draw else None

    sections = []
    paired = [r for r in evals if not r.unpaired]  # runs without sharp images have a section of their own
    if paired:
        main = Section("Restoration quality", "quality")
        main_table = tables.main_table(replace(collection, evals=paired), paper)
        add_published_rows(main_table, paired, published or {})  # the benchmarks' published results
        main.items.append(keep(main_table))
        for bench in sorted({r.bench for r in paired}):
            per_task = keep(tables.per_task_table([r for r in paired if r.bench == bench]))
            if per_task:
                main.items.append(per_task)
        unlabelled = sorted({r.bench for r in paired if not r.labelled})
        if unlabelled:
            main.missing.append(
                f"Per-blur-type results for {', '.join(unlabelled)}: the benchmark has no task labels "
                "(or its per-image table was not logged)."
            )
        sections += [main, _routing_section(paired, keep, figure), _usage_section(evals, figure)]
        sections.append(_k_section(paired, keep, figure))
        sections.append(_per_image_section(paired, keep, figure))
        sections.append(_images_section(paired, figure))
    elif evals:
        sections.append(_usage_section(evals, figure))
    if len(paired) < len(evals):
        sections.append(unpaired_section([r for r in evals if r.unpaired], keep, figure))
    sections.append(_finetune_section(collection, keep, figure))
    runs = Section("Runs", "runs", text=[f"Source: {collection.source}."])
    runs.items.append(keep(tables.runs_table(collection)))
    keep(tables.expert_usage_table(evals))
    sections.append(runs)
    for section in sections:
        section.items = [item for item in section.items if item is not None]
    return sections, made


def _routing_section(evals: list[EvalRun], keep, figure) -> Section:
    section = Section(
        "Routing: auto versus oracle",
        "routing",
        text=[
            "auto: the router picks the experts; oracle: the benchmark's own blur label forces the expert "
            "(the paper's manual selection). The gap is what the router's mistakes cost."
        ],
    )
    routed = [r for r in evals if r.has_router]
    if not routed:
        section.missing.append("No evaluated model has a router (dense models only).")
        return section
    section.items.append(keep(tables.routing_table(routed)))
    unlabelled = []
    same_router: dict[tuple[str, str], list[EvalRun]] = {}  # k changes the experts mixed, not the choice
    for run in sorted(routed, key=lambda r: r.label):
        same_router.setdefault((run.checkpoint_sha256, run.bench), []).append(run)
    for group in same_router.values():
        run, names = group[0], ", ".join(r.label for r in group)
        confusion = keep(tables.confusion_table(run, names))
        if confusion is None:
            unlabelled.extend(r.key for r in group)
            continue
        data = run.summary("auto").confusion
        drawn = figure(
            lambda d=data, r=run: routing_figures.confusion_figure(
                d.matrix, d.labels, f"{r.label} on {r.bench}: router's choices"
            ),
            f"confusion__{run.key}",
            f"Router confusion of {run.label} on {run.bench} (rows: true blur, columns: router's choice)."
            + (" One checkpoint, so one router whatever k is." if len(group) > 1 else ""),
        )
        section.items.append(Row([i for i in (drawn, confusion) if i is not None]))
    if unlabelled:
        section.missing.append(
            f"Routing accuracy and confusion for {', '.join(unlabelled)}: the benchmark has no task labels."
        )
    return section


def _usage_section(evals: list[EvalRun], figure) -> Section:
    section = Section(
        "Expert usage",
        "experts",
        text=[
            "For each MoE block, the share of images of each blur type whose auto routing used each expert "
            "(the full counts per routing mode are in tables/expert_usage.csv)."
        ],
    )
    for run in evals:
        auto = run.summary("auto")
        usage = auto.expert_usage if auto is not None else None
        if not usage:
            continue
        images = _images_per_label(run)
        section.items.append(
            figure(
                lambda u=usage, r=run, n=images: routing_figures.expert_usage_figure(
                    u, f"{r.label} on {r.bench}: experts chosen by auto routing", images=n
                ),
                f"expert_usage__{run.key}",
                f"Expert usage of {run.label} on {run.bench}, auto routing"
                + (
                    ": every MoE block used the same experts (one routing decision per image), drawn once."
                    if routing_figures.same_in_every_block(usage)
                    else ", per MoE block."
                ),
            )
        )
    if not section.items:
        section.missing.append("No run recorded expert usage (dense models, or results.json was not logged).")
    return section


def _images_per_label(run: EvalRun) -> dict[str, int] | None:
    if run.per_image is None:
        return None
    rows = run.per_image[run.per_image["mode"] == "auto"]
    return {str(k): int(v) for k, v in rows["label"].fillna("unlabelled").value_counts().items()}


def _k_section(evals: list[EvalRun], keep, figure) -> Section:
    section = Section("Active experts (k)", "k")
    table = keep(tables.k_sweep_table(evals))
    if table is None:
        section.missing.append(
            "A k sweep: no model was evaluated with different numbers of active experts "
            "(`demoe-eval run -e tiny_synth_k_sweep` runs offline with the shipped model; "
            "`-e k_sweep` sweeps the published DeMoE once its weights are fetched)."
        )
        return section
    points = []  # auto routing only: a forced task routes to one expert whatever k is
    for group in tables.k_sweep_groups(evals):
        for run in group:
            result = run.modes.get("auto")
            if result is None:
                continue
            active = run.costs.active_params
            points.append(
                {
                    "series": f"{run.model} on {run.bench}",
                    "k": run.k,
                    "active_params": None if active is None else active / 1e6,
                    "seconds": result.seconds_per_image,
                    "value": result.metrics.get("psnr"),
                }
            )
    section.items.append(
        figure(
            lambda: figures.k_sweep_figure(
                points, "psnr", "Auto routing: quality against active parameters and time"
            ),
            "k_sweep",
            "PSNR with auto routing against active parameters and measured seconds per image, one point per k "
            "(oracle routing forces one expert, so k does not change it).",
        )
    )
    section.items.append(table)
    return section


def _per_image_section(evals: list[EvalRun], keep, figure) -> Section:
    section = Section("Per-image quality", "per-image")
    for run in evals:
        if run.per_image is None or "psnr" not in run.per_image.columns:
            section.missing.append(
                f"Per-image PSNR of {run.key}: its per-image table or PSNR was not logged."
            )
            continue
        section.items.append(
            figure(
                lambda r=run: figures.distribution_figure(r.per_image, "psnr", f"{r.label} on {r.bench}"),
                f"psnr_per_image__{run.key}",
                f"Per-image PSNR of {run.label} on {run.bench} by blur type and routing mode.",
            )
        )
    worst = tables.worst_images_table(evals)
    if worst.rows:
        section.items.append(keep(worst))
    else:
        section.missing.append(
            "Images where auto routing lost against oracle: none, or no run has both auto and oracle PSNR."
        )
    return section


def _images_section(evals: list[EvalRun], figure) -> Section:
    section = Section(
        "Restored images",
        "images",
        text=["Centre crops at full resolution: the blurred input, the restorations and the sharp image."],
    )
    for run in evals:
        names = _grid_names(run)
        if not names:
            continue
        modes = [m for m in ("auto", "oracle") if m in run.modes] or [
            m for m in run.ordered_modes() if m != "identity"
        ][:2]
        rows = [(_row_title(run, name), _panels(run, name, ["blurred", *modes, "sharp"])) for name in names]
        section.items.append(
            figure(
                lambda rows=rows, r=run: figures.image_grid_figure(rows, 160, f"{r.label} on {r.bench}"),
                f"images__{run.key}",
                f"{run.label} on {run.bench}: " + " / ".join(["blurred", *modes, "sharp"]) + ".",
            )
        )
    if not section.items:
        section.missing.append(
            "Image grids: no run saved restored images; evaluate with `demoe-eval run --save-images N`."
        )
    wild = [(run, name) for run in evals for name in sorted(run.samples) if name.startswith(WILD_PREFIX)]
    for run, name in wild:
        tags = ["blurred", *(m for m in run.ordered_modes() if m != "identity" and m in run.samples[name])]
        tags += ["sharp"] if "sharp" in run.samples[name] else []
        section.items.append(
            figure(
                lambda r=run, n=name, t=tags: figures.image_grid_figure(
                    [(n, [(tag, r.samples[n].get(tag)) for tag in t])], None, f"In the wild: {r.label}"
                ),
                f"wild__{run.key}__{name}",
                f"In the wild ({name}, no ground truth): {run.label}.",
            )
        )
    if not wild:
        section.missing.append(
            "The in-the-wild sample (aio-synth's wild/clock_motion.png restored): no run saved it."
        )
    return section


def _grid_names(run: EvalRun) -> list[str]:
    """A few saved images per blur type, each of a photo no other row shows where the run saved one."""
    labels = {}
    if run.per_image is not None:
        identity = run.per_image[run.per_image["mode"] == "identity"]
        labels = dict(zip(identity["name"], identity["label"], strict=True))
    saved: dict[str, list[str]] = {}
    for name in sorted(run.samples):
        if not name.startswith(WILD_PREFIX):
            saved.setdefault(labels.get(name) or "unlabelled", []).append(name)
    shown: set[str] = set()
    rows = []
    for label in task_order(saved):
        names = saved[label]
        for _ in range(min(GRID_IMAGES_PER_TASK, len(names))):
            fresh = [n for n in names if photo_of(n) not in shown]
            name = (fresh or names)[0]
            names = [n for n in names if n != name]
            shown.add(photo_of(name))
            rows.append(name)
    return rows


def _row_title(run: EvalRun, name: str) -> str:
    label = _value(run, "identity", name, "label")
    return f"{name}\n({SHORT.get(label, label)})" if isinstance(label, str) else name


def _value(run: EvalRun, mode: str, name: str, column: str):
    table = run.per_image
    if table is None or column not in table.columns:
        return None
    rows = table[(table["mode"] == mode) & (table["name"] == name)]
    if rows.empty:
        return None
    value = rows.iloc[0][column]
    return None if value is None or value != value else value


def _panels(run: EvalRun, name: str, tags: list[str]) -> list[tuple[str, Path | None]]:
    panels = []
    for tag in tags:
        mode = "identity" if tag == "blurred" else tag
        psnr = _value(run, mode, name, "psnr")
        caption = tag if psnr is None else f"{tag}  {psnr:.2f} dB"
        choice = _value(run, mode, name, "pred_task") if tag == "auto" else None
        if choice:
            caption += f" ({SHORT.get(choice, choice)})"
        panels.append((caption, run.samples[name].get(tag)))
    return panels


def _finetune_section(collection: Collection, keep, figure) -> Section:
    section = Section("Finetuning", "finetune")
    table = keep(tables.finetune_table(collection.finetunes))
    if table is None:
        section.missing.append("Training curves: no finished finetuning run among the selected runs.")
        return section
    section.items.append(table)
    for run in collection.finetunes:
        if not run.curves:
            continue
        section.items.append(
            figure(
                lambda r=run: figures.curves_figure(r.curves, f"{r.name}: training and validation"),
                f"curves__{run.name}__{run.run_id[:8]}",
                f"Training and validation curves of {run.name} by step.",
            )
        )
    return section


def _write(report: Report, sections: list[Section], formats: list[str]) -> list[Path]:
    out = report.out
    title = "DeMoE evaluation report"
    intro = [
        f"{len(report.collection.evals)} evaluation run(s) and {len(report.collection.finetunes)} finetuning "
        f"run(s) from {report.collection.source}."
    ]
    written = []
    for table in report.tables:
        writers = {
            "md": table_formats.to_markdown,
            "tex": table_formats.to_latex,
            "csv": table_formats.to_csv,
        }
        for fmt in formats if table.document else ["csv"]:
            if fmt in writers:
                written.append(atomic_write_text(out / "tables" / f"{table.name}.{fmt}", writers[fmt](table)))
    if "md" in formats:
        written.append(atomic_write_text(out / "report.md", render_markdown(title, intro, sections)))
    if "html" in formats:
        written.append(atomic_write_text(out / "report.html", render_html(title, intro, sections, out)))
    return written + sorted((out / "figures").glob("*.*"))
