"""The report's blocks, what its sections are made of (``render`` writes them as Markdown and as HTML), and how
numbers appear in them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Text:
    """A block made of one text."""

    text: str


class Heading(Text):
    """A section's title."""


class Subheading(Text):
    """A title within a section."""


class Paragraph(Text):
    """Running text."""


class Banner(Text):
    """A warning across the top of the report."""


class Pre(Text):
    """Text shown as it is (a configuration file)."""


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    """A PNG written beside the report, with its caption."""

    path: Path
    caption: str


Block = Heading | Subheading | Paragraph | Banner | Pre | Table | Figure


def fmt(value: Any, digits: int = 3) -> str:
    """How numbers appear in the report (the tests read them back the same way)."""
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list | tuple):
        return " x ".join(fmt(float(v), 2).removesuffix(".00") for v in value)
    return str(value)


def interval(bounds: list[float] | None) -> str:
    return "–" if not bounds else f"{bounds[0]:.3f} to {bounds[1]:.3f}"
