"""The report's content as a flat list of blocks (heading, paragraph, table, image), and its two renderings: Markdown
and a self-contained HTML page. Both come from the same blocks, so they say the same thing."""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Union


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]  # cells already formatted (fercore.report.tables.fmt and friends)
    caption: str = ""


@dataclass
class Image:
    file: str  # a PNG beside report.md, by name
    alt: str
    caption: str = ""


Block = Union[Heading, Paragraph, Table, Image]


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(c) for c in b.columns) + " |",
                     "|" + "|".join("---" for _ in b.columns) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            if b.caption:
                lines.insert(0, f"*{b.caption}*\n")
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.file})" + (f"\n\n*{b.caption}*" if b.caption else ""))
    return "\n\n".join(out) + "\n"


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;
line-height:1.45}
table{border-collapse:collapse;margin:0.5em 0 1em;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f2f2f2;text-align:left}td{font-variant-numeric:tabular-nums}img{max-width:100%;height:auto}
figure{margin:0.5em 0 1.5em}figcaption,caption{color:#555;font-size:0.9em;text-align:left;padding-bottom:4px}
p.warning{background:#fde2e1;border-left:5px solid #c0392b;padding:0.6em 0.8em;font-weight:bold}"""


def to_html(title: str, blocks: list[Block]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
           f"<style>{CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            cls = ' class="warning"' if b.text.startswith("WARNING") else ""
            out.append(f"<p{cls}>{html.escape(b.text)}</p>")
        elif isinstance(b, Table):
            cap = f"<caption>{html.escape(b.caption)}</caption>" if b.caption else ""
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in b.columns)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                           for row in b.rows)
            out.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Image):
            cap = f"<figcaption>{html.escape(b.caption)}</figcaption>" if b.caption else ""
            out.append(f'<figure><img src="{html.escape(b.file)}" alt="{html.escape(b.alt)}">{cap}</figure>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def read_table(markdown: str, marker: str = "") -> tuple[list[str], list[list[str]]]:
    """The header and rows (cells as text) of the first table to_markdown wrote after the first line containing
    MARKER (the first table of all with no marker): for reading a written report back, in tests and benchmarks."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line) if marker else -1
    rows: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        elif rows:
            break
    header, _, *body = rows
    return header, body
