"""The report's two renderers: Markdown, and one self-contained HTML file (figures embedded)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from tsretrain.evaluation.report.blocks import Banner, Block, Figure, Heading, Paragraph, Pre, Subheading, Table


def to_markdown(blocks: list[Block], base: Path) -> str:
    """The report in Markdown; figures linked relative to ``base`` (the report's folder)."""
    lines = ["# tsretrain run report", ""]
    for block in blocks:
        match block:
            case Heading(text):
                lines += ["## " + text, ""]
            case Subheading(text):
                lines += ["### " + text, ""]
            case Paragraph(text):
                lines += [text, ""]
            case Banner(text):
                lines += [f"> **{text}**", ""]
            case Pre(text):
                lines += ["```", text.rstrip("\n"), "```", ""]
            case Table(header, rows):
                lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
                lines.append("")
            case Figure(path, caption):
                lines += [f"![{caption}]({path.relative_to(base).as_posix()})", ""]
    return "\n".join(lines)


STYLE = (
    # nothing wider than the window at 800 px: cells wrap anywhere (a 64-digit digest too), figures scale
    "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 12px;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;max-width:100%}td,th{border:1px solid #ccc;padding:3px 6px;"
    "font-size:13px;overflow-wrap:anywhere}th{background:#eee}img{max-width:100%;height:auto}"
    "figcaption{font-size:13px;color:#555}pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:12px;"
    "background:#f6f6f6;padding:6px}@media (max-width:900px){td,th{font-size:11px;padding:2px 3px}}"
    ".banner{background:#fdecea;border:2px solid #c0392b;padding:8px 12px;font-weight:bold;margin:1em 0}"
)


def to_html(blocks: list[Block]) -> str:
    """The report as one self-contained HTML file (figures embedded)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>tsretrain run report</title><style>",
        STYLE,
        "</style></head><body><h1>tsretrain run report</h1>",
    ]
    for block in blocks:
        match block:
            case Heading(text):
                parts.append(f"<h2>{html.escape(text)}</h2>")
            case Subheading(text):
                parts.append(f"<h3>{html.escape(text)}</h3>")
            case Paragraph(text):
                parts.append(f"<p>{html.escape(text)}</p>")
            case Banner(text):
                parts.append(f"<div class='banner'>{html.escape(text)}</div>")
            case Pre(text):
                parts.append(f"<pre>{html.escape(text)}</pre>")
            case Table(header, rows):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
                )
                parts.append(f"<table><tr>{head}</tr>{body}</table>")
            case Figure(path, caption):
                data = base64.b64encode(path.read_bytes()).decode()
                parts.append(
                    f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
    parts.append("</body></html>")
    return "\n".join(parts)
