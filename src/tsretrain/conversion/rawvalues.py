"""Header values decoded straight from pydicom's raw elements, for the scan's speed.

Why this exists: the scan reads some 25 values of every file. pydicom turns each raw element into a
``DataElement`` through its hooks, its validation and its value classes (``UID``, ``DSfloat``, ``IS``,
``MultiValue``), which costs more than parsing the header itself. For the value representations that need
no character set (UI, CS, DS, IS, US), and values that conform to the standard's rules for them (pydicom's
own patterns and length limits, so pydicom would accept them without a warning), the bytes are decoded
here into plain ``str``, ``float`` and ``int`` values that compare equal to pydicom's.

Everything else goes through pydicom unchanged, so odd files behave exactly as they do with pydicom alone
(same values, same warnings, same errors): elements pydicom has already converted, empty or deferred
values, sequences, text that depends on the Specific Character Set (LO, SH, PN...), unknown, ambiguous or
UN value representations, non-conforming values, multi-valued values where text is asked for.
"""

from __future__ import annotations

import re
from enum import Enum
from functools import cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag


class _Not(Enum):
    PRESENT = "the element is missing"
    DECODED = "left to pydicom"


_REQUIRED: Any = object()

# pydicom's patterns (pydicom.valuerep.VR_REGEXES) and length limits (MAX_VALUE_LEN) for each VR decoded here.
_CONFORMING = {
    "UI": (re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*"), 64),
    "CS": (re.compile(r"[A-Z0-9 _]*"), 16),
    "DS": (re.compile(r" *[+\-]?(\d+|\d+\.\d*|\.\d+)([eE][+\-]?\d+)? *"), 16),
    "IS": (re.compile(r" *[+\-]?\d+ *"), 12),
}
_IS_RANGE = range(-(2**31), 2**31)


@cache
def _spec(keyword: str) -> tuple[BaseTag, str]:
    """The tag of a DICOM keyword and its dictionary VR (used for implicit VR files, as pydicom does)."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"not a DICOM keyword: {keyword}")
    return Tag(tag), dictionary_VR(tag)


def _decode(ds: Dataset, keyword: str) -> tuple[list[str], list[Any]] | _Not:
    """The element's values (``str``, ``int`` or ``float``) with their text (as pydicom's ``str()`` gives it)."""
    tag, dictionary_vr = _spec(keyword)
    element: DataElement | RawDataElement | None = ds.get_item(tag, keep_deferred=True)
    if element is None:
        return _Not.PRESENT
    if not isinstance(element, RawDataElement) or not isinstance(element.value, bytes) or not element.value:
        return _Not.DECODED  # converted already, deferred, empty
    data, vr = element.value, element.VR or dictionary_vr
    if vr == "US":
        if len(data) != 2:
            return _Not.DECODED
        number = int.from_bytes(data, "little" if element.is_little_endian else "big")
        return [str(number)], [number]
    if vr not in _CONFORMING:
        return _Not.DECODED
    text = data.decode("latin-1")  # pydicom's default encoding for these VRs ("iso8859")
    items = text.rstrip(" \x00").split("\\")
    pattern, max_length = _CONFORMING[vr]
    if not all(len(item) <= max_length and pattern.fullmatch(item) for item in items):
        return _Not.DECODED
    values: list[Any] = items
    if vr == "DS":
        values = [float(item) for item in items]
    elif vr == "IS":
        values = [int(item) for item in items]
        if not all(v in _IS_RANGE for v in values):
            return _Not.DECODED
    return [item.strip() for item in items], values


def header_value(ds: Dataset, keyword: str, default: Any = _REQUIRED) -> Any:
    """``ds.get(keyword, default)``, or ``getattr(ds, keyword)`` without a default, decoded here when it can be.

    Values come back as ``str``, ``int`` or ``float`` (a ``list`` of them when multi-valued), equal to
    pydicom's ``UID``, ``IS``, ``DSfloat`` and ``MultiValue``; anything not decoded here is pydicom's own.
    """
    decoded = _decode(ds, keyword)
    if decoded is _Not.PRESENT and default is not _REQUIRED:
        return default
    if isinstance(decoded, _Not):
        return getattr(ds, keyword) if default is _REQUIRED else ds.get(keyword, default)
    values = decoded[1]
    return values[0] if len(values) == 1 else values


def header_text(ds: Dataset, keyword: str) -> str:
    """``str(value).strip()`` of the element's value; ``""`` when it is missing or empty."""
    decoded = _decode(ds, keyword)
    if decoded is _Not.PRESENT:
        return ""
    if isinstance(decoded, _Not) or len(decoded[0]) != 1:  # str() of a MultiValue is pydicom's to format
        value = ds.get(keyword, "")
        return str(value).strip() if value is not None else ""
    return decoded[0][0]
