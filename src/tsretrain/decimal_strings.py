"""DICOM decimal strings (DS): at most 16 bytes, as planning systems insist, and contour data as raw bytes."""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

DS_BYTES = 16
CONTOUR_DATA = Tag(0x3006, 0x0050)


def decimal_string(value: float, decimals: int = 6) -> str:
    """``value`` in fixed point (trailing zeros dropped), or in as many significant digits as fit 16 bytes."""
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        return "0"
    digits = DS_BYTES - 6  # room for sign, point and exponent
    while len(text) > DS_BYTES:
        text = f"{value:.{digits}g}"
        digits -= 1
    return text


def encoded(values: Iterable[float]) -> bytes:
    """Decimal strings as a multi-valued DS value is encoded (backslash-separated, padded to an even length)."""
    raw = "\\".join(decimal_string(v) for v in values).encode("ascii")
    return raw + b" " * (len(raw) % 2)


def contour_data(values: Iterable[float]) -> RawDataElement:
    """ContourData as its encoded bytes: pydicom writes them as they are instead of validating every number
    (which would make contours most of the time a structure set takes to write)."""
    raw = encoded(values)
    return RawDataElement(CONTOUR_DATA, "DS", len(raw), raw, 0, False, True)
