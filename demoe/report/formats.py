"""The report's table as plain data (``Table``), its cells and best values, and its formats: Markdown,
LaTeX (booktabs) and CSV. The same rows become every format, so the numbers agree everywhere."""

import csv
import io
import math
from dataclasses import dataclass, field
from functools import cache

MISSING = "n/a"
METRIC_ORDER = ("psnr", "ssimc", "ssim", "psnry-ycbcr", "ssim-ycbcr", "lpips", "lpips-vgg")
METRIC_TITLES = {
    "psnr": "PSNR (dB)",
    "ssimc": "SSIM",
    "ssim": "SSIM-Y",
    "psnry-ycbcr": "PSNR-Y YCbCr (dB)",  # the BasicSR/MATLAB convention: BT.601 Y
    "ssim-ycbcr": "SSIM-Y YCbCr",
    "lpips": "LPIPS",
    "lpips-vgg": "LPIPS-VGG",
}


class Estimate(float):
    """A mean with its confidence interval. It is the float of its value wherever a number is used
    (ranked, averaged, written at six decimals in its CSV column); shown ``23.59 [23.10, 24.02]`` in
    Markdown, LaTeX and HTML, its bounds in two more CSV columns, ``KEY_ci_low`` and ``KEY_ci_high``."""

    __slots__ = ("low", "high")

    def __new__(cls, value: float, low: float, high: float) -> "Estimate":
        estimate = super().__new__(cls, value)
        estimate.low, estimate.high = float(low), float(high)
        return estimate


@dataclass
class Column:
    key: str  # the CSV header
    title: str
    group: str = ""
    fmt: str = "{}"
    lower_better: bool | None = None  # None: no best value is marked in this column


@dataclass
class Table:
    name: str  # file stem under tables/
    title: str
    columns: list[Column]
    rows: list[list] = field(default_factory=list)  # cells: float, int, str, or None (missing)
    ranked: list[bool] = field(default_factory=list)  # rows that compete for the best value
    breaks: list[int] = field(default_factory=list)  # row indices a rule is drawn above
    notes: list[str] = field(default_factory=list)
    links: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, column) -> URL, in HTML only
    document: bool = True  # shown in report.md/html; otherwise written as CSV only

    def add(self, row: list, ranked: bool = False, rule: bool = False) -> None:
        if rule and self.rows:
            self.breaks.append(len(self.rows))
        self.rows.append(row)
        self.ranked.append(ranked)


# ----------------------------------------------------------------------------- cells and best values


def metric_title(name: str) -> str:
    return METRIC_TITLES.get(name, name.upper())


def metric_format(name: str) -> str:
    return "{:.2f}" if name.startswith("psnr") else "{:.4f}"


def ordered_metrics(names) -> list[str]:
    return sorted(
        set(names), key=lambda m: (METRIC_ORDER.index(m) if m in METRIC_ORDER else len(METRIC_ORDER), m)
    )


@cache
def lower_better(metric: str) -> bool:
    """pyiqa's direction of ``metric`` (``val/psnr`` reads as ``psnr``); names pyiqa does not know rank higher-first."""
    from demoe.metrics.scorers import MetricError, availability  # not at the top: it imports torch

    name = metric.rpartition("/")[2]
    try:
        return availability([name])[name].lower_better
    except MetricError:
        return False


def format_parts(value, column: Column) -> tuple[str, str | None]:
    """A cell as text, and its interval as ``[low, high]`` (None without one)."""
    if isinstance(value, Estimate):
        interval = f"[{column.fmt.format(value.low)}, {column.fmt.format(value.high)}]"
        return format_parts(float(value), column)[0], interval
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING, None
    if isinstance(value, float):
        return column.fmt.format(value), None
    return str(value), None


def format_cell(value, column: Column) -> str:
    return " ".join(p for p in format_parts(value, column) if p)


def best_cells(table: Table) -> set[tuple[int, int]]:
    """(row, column) of the best value of each ranked column among ranked rows; ties (as printed) all marked."""
    marked = set()
    for j, column in enumerate(table.columns):
        if column.lower_better is None:
            continue
        values = {
            i: float(column.fmt.format(row[j]))
            for i, row in enumerate(table.rows)
            if table.ranked[i] and isinstance(row[j], float) and not math.isnan(row[j])
        }
        if len(values) < 2:
            continue
        best = (min if column.lower_better else max)(values.values())
        marked |= {(i, j) for i, v in values.items() if v == best}
    return marked


def arrow(column: Column) -> str:
    return "" if column.lower_better is None else ("↓" if column.lower_better else "↑")


# ----------------------------------------------------------------------------- formats


def to_markdown(table: Table) -> str:
    best = best_cells(table)
    header = [" ".join(p for p in (c.group, c.title + arrow(c)) if p) for c in table.columns]
    align = ["---:" if is_numeric(table, j) else "---" for j in range(len(table.columns))]
    lines = [f"| {' | '.join(header)} |", f"| {' | '.join(align)} |"]
    for i, row in enumerate(table.rows):
        cells = []
        for j, column in enumerate(table.columns):
            text, interval = (p.replace("|", "\\|") if p else p for p in format_parts(row[j], column))
            text = f"**{text}**" if (i, j) in best else text
            cells.append(f"{text} {interval}" if interval else text)
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def is_numeric(table: Table, j: int) -> bool:
    """Whether column ``j`` holds numbers (right-aligned) rather than names."""
    column = table.columns[j]
    if column.lower_better is not None or column.fmt != "{}":
        return True
    return any(isinstance(row[j], float | int) and not isinstance(row[j], bool) for row in table.rows)


TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_"}
TEX_ESCAPES |= {"{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "−": "$-$"}
TEX_ESCAPES |= {"↑": r"$\uparrow$", "↓": r"$\downarrow$"}


def tex_escape(text: str) -> str:
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs ``table`` float: group headers spanning their columns, the best values in bold."""
    best = best_cells(table)
    spec = "".join("r" if is_numeric(table, j) else "l" for j in range(len(table.columns)))
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex_escape(table.title)}}}",
        rf"\label{{tab:{table.name}}}",
        r"\small",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    groups = column_groups(table.columns)
    if any(g for g, _, _ in groups):
        cells, rules = [], []
        for group, start, width in groups:
            if group:
                cells.append(rf"\multicolumn{{{width}}}{{c}}{{{tex_escape(group)}}}")
                rules.append(rf"\cmidrule(lr){{{start + 1}-{start + width}}}")
            else:
                cells += [""] * width
        lines += [" & ".join(cells) + r" \\", " ".join(rules)]
    tex_arrow = {"↑": r"$\uparrow$", "↓": r"$\downarrow$", "": ""}
    lines.append(" & ".join(tex_escape(c.title) + tex_arrow[arrow(c)] for c in table.columns) + r" \\")
    lines.append(r"\midrule")
    for i, row in enumerate(table.rows):
        if i in table.breaks:
            lines.append(r"\midrule")
        cells = []
        for j, column in enumerate(table.columns):
            text, interval = (tex_escape(p) if p else p for p in format_parts(row[j], column))
            text = rf"\textbf{{{text}}}" if (i, j) in best else text
            cells.append(rf"{text} {{\scriptsize {interval}}}" if interval else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\par\smallskip\footnotesize " + tex_escape(" ".join(table.notes)))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def column_groups(columns: list[Column]) -> list[tuple[str, int, int]]:
    """Runs of adjacent columns sharing a group: (group, first index, width)."""
    out: list[tuple[str, int, int]] = []
    for i, column in enumerate(columns):
        if out and out[-1][0] == column.group and column.group:
            group, start, width = out[-1]
            out[-1] = (group, start, width + 1)
        else:
            out.append((column.group, i, 1))
    return out


def _csv_value(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    return f"{v:.6f}" if isinstance(v, float) else v


def to_csv(table: Table) -> str:
    """Machine-readable: headers are the columns' keys, numbers at six decimals, missing as ``n/a``; a
    column with intervals is followed by ``KEY_ci_low`` and ``KEY_ci_high``."""
    with_ci = [any(isinstance(row[j], Estimate) for row in table.rows) for j in range(len(table.columns))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = []
    for column, ci in zip(table.columns, with_ci, strict=True):
        header += [column.key, f"{column.key}_ci_low", f"{column.key}_ci_high"] if ci else [column.key]
    writer.writerow(header)
    for row in table.rows:
        cells = []
        for v, ci in zip(row, with_ci, strict=True):
            cells.append(_csv_value(float(v) if isinstance(v, Estimate) else v))
            if ci:
                cells += [_csv_value(v.low), _csv_value(v.high)] if isinstance(v, Estimate) else [MISSING] * 2
        writer.writerow(cells)
    return buffer.getvalue()


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.@" else "-" for ch in text)
