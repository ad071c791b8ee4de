"""The report as a list of sections (text, tables, figures, missing pieces), and its Markdown page.

The Markdown page and the HTML page render the same sections, so they never disagree.
"""

from dataclasses import dataclass, field
from pathlib import Path

from demoe.report.formats import Table, to_markdown


@dataclass
class Figure:
    path: Path  # the PNG, relative to the report folder; an SVG lies beside it
    caption: str


@dataclass
class Row:
    """Items shown side by side in the HTML page (one after another in Markdown)."""

    items: list


@dataclass
class Section:
    title: str
    anchor: str
    text: list[str] = field(default_factory=list)
    items: list[Table | Figure | Row] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # what a reader would look for here and why it is absent


def render_markdown(title: str, intro: list[str], sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for paragraph in intro:
        lines += [paragraph, ""]
    lines += ["Contents: " + " · ".join(f"[{s.title}](#{s.anchor})" for s in sections), ""]
    for section in sections:
        lines += [f'<a id="{section.anchor}"></a>', "", f"## {section.title}", ""]
        for paragraph in section.text:
            lines += [paragraph, ""]
        for item in (
            i for entry in section.items for i in (entry.items if isinstance(entry, Row) else [entry])
        ):
            if isinstance(item, Figure):
                lines += [f"![{item.caption}]({item.path.as_posix()})", "", f"*{item.caption}*", ""]
            else:
                lines += [f"**{item.title}**", "", to_markdown(item)]
                lines += [f"*{note}*  " for note in item.notes]
                lines.append("")
        for note in section.missing:
            lines += [f"> **Missing:** {note}", ""]
    return "\n".join(lines).rstrip() + "\n"
