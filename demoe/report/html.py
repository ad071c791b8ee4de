"""One self-contained HTML page: the report's sections with every figure embedded as a data URI.

A small script marks each image after the page loads (``data-loaded="yes"`` or ``"no"``) so a headless
browser can tell whether every figure displayed.
"""

import base64
from html import escape
from pathlib import Path

from demoe.report.document import Figure, Row, Section
from demoe.report.formats import MISSING, Table, arrow, best_cells, column_groups, format_parts, is_numeric

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; color: #1d2127;
       margin: 0 auto; padding: 24px 32px 64px; max-width: 1320px; line-height: 1.45; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e6ea; }
h3 { font-size: 15px; margin: 20px 0 6px; }
p { margin: 6px 0; }
nav { margin: 12px 0 8px; font-size: 14px; }
nav a { margin-right: 14px; color: #1f5fa8; text-decoration: none; }
.source { color: #59606a; font-size: 13px; }
.scroll { overflow-x: auto; margin: 6px 0 4px; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 7px; white-space: nowrap; }
thead tr.groups th { border-bottom: 1px solid #9aa3ad; text-align: center; font-weight: 600; }
thead tr.names th { border-bottom: 2px solid #1d2127; font-weight: 600; }
table { border-top: 2px solid #1d2127; border-bottom: 2px solid #1d2127; }
td.num, th.num { text-align: right; }
td.txt, th.txt { text-align: left; }
tr.rule td { border-top: 1px solid #c4cad1; }
tbody tr:hover { background: #f3f6f9; }
td.best { font-weight: 700; }
td .ci { color: #59606a; font-size: 11px; font-weight: 400; }
td.na { color: #9aa3ad; }
.notes { color: #59606a; font-size: 12px; margin: 2px 0 14px; }
.notes p { margin: 1px 0; }
figure { margin: 12px 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eceff2; }
figcaption { color: #59606a; font-size: 13px; margin-top: 4px; }
.row { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
.row figure { display: table; }  /* the caption wraps at the figure's width, the table stays beside it */
.row figcaption { display: table-caption; caption-side: bottom; }
.missing { background: #fff7e0; border-left: 4px solid #e0a800; padding: 6px 12px; margin: 10px 0; font-size: 14px; }
"""

MAX_DATA_COLUMNS = 12  # beside the row labels, what fits the page's 1320 px at the tables' font

SCRIPT = """
window.addEventListener("load", function () {
  for (const img of document.images) {
    img.dataset.loaded = img.complete && img.naturalWidth > 0 ? "yes" : "no";
  }
  document.body.dataset.imagesChecked = String(document.images.length);
  document.body.dataset.widestTable = String(
    Math.max(0, ...Array.from(document.querySelectorAll("table"), (t) => t.offsetWidth))
  );
});
"""


def render_table(table: Table) -> str:
    """The table, wrapped into stacked parts where its column groups would not fit the page: each part
    repeats the row labels (the leading columns without a group) and keeps groups whole."""
    parts = column_parts(table)
    html = [
        _render_part(table, columns, first=n == 0, last=n == len(parts) - 1)
        for n, columns in enumerate(parts)
    ]
    return "".join(html)


def column_parts(table: Table, limit: int = MAX_DATA_COLUMNS) -> list[list[int]]:
    """Indices of the columns of each part of ``table`` (one part when it fits in ``limit`` data columns)."""
    keys = 0
    while keys < len(table.columns) and not table.columns[keys].group:
        keys += 1
    parts: list[list[int]] = [[]]
    for _, start, width in column_groups(table.columns[keys:]):
        if parts[-1] and len(parts[-1]) + width > limit:
            parts.append([])
        parts[-1] += range(keys + start, keys + start + width)
    return [list(range(keys)) + part for part in parts]


def _render_part(table: Table, indices: list[int], first: bool, last: bool) -> str:
    best = best_cells(table)
    kind = {j: "num" if is_numeric(table, j) else "txt" for j in indices}
    columns = [table.columns[j] for j in indices]
    head = []
    groups = column_groups(columns)
    if any(group for group, _, _ in groups):
        cells = [
            f'<th colspan="{width}">{escape(group)}</th>' if group else "<th></th>" * width
            for group, _, width in groups
        ]
        head.append(f'<tr class="groups">{"".join(cells)}</tr>')
    names = "".join(
        f'<th class="{kind[j]}">{escape(c.title + arrow(c))}</th>'
        for j, c in zip(indices, columns, strict=True)
    )
    head.append(f'<tr class="names">{names}</tr>')
    body = []
    for i, row in enumerate(table.rows):
        cells = []
        for j, column in zip(indices, columns, strict=True):
            text, interval = format_parts(row[j], column)
            classes = [kind[j]] + (["best"] if (i, j) in best else []) + (["na"] if text == MISSING else [])
            link = table.links.get((i, j))
            shown = f'<a href="{escape(link)}">{escape(text)}</a>' if link else escape(text)
            if interval:
                shown += f'<br><span class="ci">{escape(interval)}</span>'
            cells.append(f'<td class="{" ".join(classes)}">{shown}</td>')
        rule = ' class="rule"' if i in table.breaks else ""
        body.append(f"<tr{rule}>{''.join(cells)}</tr>")
    notes = "".join(f"<p>{escape(n)}</p>" for n in table.notes) if last else ""
    return (
        (f"<h3>{escape(table.title)}</h3>\n" if first else "")
        + f'<div class="scroll"><table data-table="{escape(table.name)}">'
        + f"<thead>{''.join(head)}</thead><tbody>\n"
        + "\n".join(body)
        + "\n</tbody></table></div>\n"
        + (f'<div class="notes">{notes}</div>\n' if notes else "")
    )


def render_figure(figure: Figure, root: Path) -> str:
    """The PNG inline, shown at 100 pixels per figure inch (it is drawn at 150: sharp on high-density screens)."""
    png = (root / figure.path).read_bytes()
    width = int.from_bytes(png[16:20], "big") * 2 // 3
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(figure.caption)}" '
        f'width="{width}" data-file="{escape(figure.path.as_posix())}">'
        f"<figcaption>{escape(figure.caption)} "
        f'(<a href="{escape(figure.path.with_suffix(".svg").as_posix())}">SVG</a>)</figcaption></figure>\n'
    )


def render_item(item: Table | Figure | Row, root: Path) -> str:
    if isinstance(item, Row):
        return (
            '<div class="row">'
            + "".join(f"<div>{render_item(i, root)}</div>" for i in item.items)
            + "</div>\n"
        )
    return render_figure(item, root) if isinstance(item, Figure) else render_table(item)


def render_html(title: str, intro: list[str], sections: list[Section], root: Path) -> str:
    """The page; ``root`` is the report folder the figures' paths are relative to."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        *(f'<p class="source">{escape(p)}</p>' for p in intro),
        "<nav>" + "".join(f'<a href="#{s.anchor}">{escape(s.title)}</a>' for s in sections) + "</nav>",
    ]
    for section in sections:
        parts.append(f'<section id="{section.anchor}"><h2>{escape(section.title)}</h2>')
        parts += [f"<p>{escape(p)}</p>" for p in section.text]
        for item in section.items:
            parts.append(render_item(item, root))
        parts += [f'<div class="missing"><b>Missing:</b> {escape(m)}</div>' for m in section.missing]
        parts.append("</section>")
    parts += [f"<script>{SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"
