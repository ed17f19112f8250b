"""Load, validate and apply organ dictionaries (YAML).

A dictionary fixes the label ids of a model and, per label, where its voxels come from. ROI names from
an RTSTRUCT are matched case-insensitively after trimming and folding inner white space, by full-match
regular expressions. Format::

    name: radcure-oar21
    version: "1.0"
    labels:
      - id: 1
        name: GTVp
        required: true          # a case without it is excluded (reason no_gtvp)
        multiple: union         # several matching ROIs (GTVp, GTVp2) are merged; default: ambiguous
        sources:
          - rtstruct: ["gtvp", "gtvp\\d+"]
        roi_name: GTVp          # the structure id written into RTSTRUCT/SEG (at most 16 characters); default: name
        type: GTV               # RTROIInterpretedType; default: GTV/CTV/PTV by name, EXTERNAL for body, else ORGAN
        colour: [255, 0, 0]     # display colour (RGB); default: from a fixed palette by id
    precedence: [...]           # write order for overlapping voxels, last wins; default: id order, GTVp last
    ignore: ["z_.*", "ptv.*"]   # names that are known not to be labels (reported as ignored, not unmapped)
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tsretrain.errors import UserError
from tsretrain.reasons import Reason

TUMOUR_LABEL = "GTVp"
KNOWN_SOURCES = ("rtstruct", "totalsegmentator", "body")
STRUCTURE_ID_LENGTH = 16
"""Longest structure id planning systems accept (ROIName is an LO of 64, but Eclipse refuses more than 16)."""


class RoiType(StrEnum):
    """RTROIInterpretedType: DICOM's defined terms (PS3.3 C.8.8.8) a label can take."""

    EXTERNAL = "EXTERNAL"
    PTV = "PTV"
    CTV = "CTV"
    GTV = "GTV"
    TREATED_VOLUME = "TREATED_VOLUME"
    IRRAD_VOLUME = "IRRAD_VOLUME"
    BOLUS = "BOLUS"
    AVOIDANCE = "AVOIDANCE"
    ORGAN = "ORGAN"
    MARKER = "MARKER"
    CAVITY = "CAVITY"
    SUPPORT = "SUPPORT"
    FIXATION = "FIXATION"
    CONTROL = "CONTROL"


# distinct display colours (RGB) for labels without their own; a tumour is red unless it says otherwise
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75), (227, 119, 194),
    (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120), (152, 223, 138),
    (197, 176, 213), (196, 156, 148), (247, 182, 210), (219, 219, 141), (158, 218, 229), (57, 59, 121),
    (99, 121, 57), (140, 109, 49), (123, 65, 115), (82, 84, 163), (181, 207, 107), (231, 186, 82),
)  # fmt: skip
TUMOUR_COLOURS = {RoiType.GTV: (255, 0, 0), RoiType.CTV: (255, 165, 0), RoiType.PTV: (0, 255, 255)}


class DictionaryError(UserError):
    """An organ dictionary is invalid; the message says where and how to fix it."""


def normalise_roi_name(raw: str) -> str:
    """The form ROI names are matched in: trimmed, case-folded, inner white space folded."""
    return re.sub(r"\s+", " ", raw.strip()).casefold()


@dataclass(frozen=True)
class PseudoLabelSource:
    """A class of a TotalSegmentator task."""

    task: str
    cls: str


@dataclass(frozen=True)
class Label:
    """One label of a dictionary, with its sources in order of preference.

    A source is ``"rtstruct"`` (the ROIs matching ``rtstruct_patterns``), a :class:`PseudoLabelSource`, or
    ``"body"`` (the body mask of the CT minus every other label).
    """

    id: int
    name: str
    rtstruct_patterns: tuple[re.Pattern[str], ...]
    required: bool = False
    union: bool = False
    sources: tuple[str | PseudoLabelSource, ...] = ("rtstruct",)
    roi_name: str = ""  # the structure id of exported contours (at most 16 characters); empty: the name
    type: RoiType = RoiType.ORGAN
    colour: tuple[int, int, int] = (255, 0, 0)

    @property
    def structure_id(self) -> str:
        """The name exported contours carry (RTSTRUCT ROIName, SEG SegmentLabel)."""
        return self.roi_name or self.name

    def matches(self, raw_name: str) -> bool:
        name = normalise_roi_name(raw_name)
        return any(p.fullmatch(name) for p in self.rtstruct_patterns)


@dataclass(frozen=True)
class RoiMapping:
    """How the ROI names of one structure set map onto a dictionary."""

    label_of_roi: dict[str, str]  # raw ROI name -> label name
    unmapped: list[str]
    ignored: list[str]
    missing: list[str]  # labels of the dictionary without a ROI
    problems: list[tuple[Reason, str]] = field(default_factory=list)


@dataclass(frozen=True)
class OrganDictionary:
    """A validated organ dictionary."""

    name: str
    version: str
    description: str
    labels: tuple[Label, ...]
    precedence: tuple[str, ...]
    ignore: tuple[re.Pattern[str], ...]
    sha256: str

    def by_name(self, name: str) -> Label:
        for label in self.labels:
            if label.name == name:
                return label
        raise KeyError(name)

    @property
    def required(self) -> list[str]:
        return [label.name for label in self.labels if label.required]

    def nnunet_labels(self) -> dict[str, int]:
        """The ``labels`` entry of an nnU-Net ``dataset.json``."""
        return {"background": 0, **{label.name: label.id for label in self.labels}}

    def map_rois(self, raw_names: list[str]) -> RoiMapping:
        """Assign raw ROI names to labels and collect ambiguity and missing-label problems."""
        label_of_roi: dict[str, str] = {}
        unmapped: list[str] = []
        ignored: list[str] = []
        problems: list[tuple[Reason, str]] = []
        contested: set[str] = set()
        by_normal: dict[str, list[str]] = {}
        for raw in raw_names:
            by_normal.setdefault(normalise_roi_name(raw), []).append(raw)
        for normal, raws in by_normal.items():
            hits = [label for label in self.labels if label.matches(normal)]
            if len(hits) > 1:
                problems.append((Reason.AMBIGUOUS_ROI, f"ROI {raws[0]!r} matches labels {[h.name for h in hits]}"))
                continue
            if not hits:
                if any(p.fullmatch(normal) for p in self.ignore):
                    ignored.extend(raws)
                else:
                    unmapped.extend(raws)
                continue
            if len(raws) > 1:
                problems.append((Reason.AMBIGUOUS_ROI, f"ROIs {raws} are the same name for label {hits[0].name}"))
                contested.add(hits[0].name)
                continue
            label_of_roi[raws[0]] = hits[0].name
        for label in self.labels:
            sources = [raw for raw, name in label_of_roi.items() if name == label.name]
            if len(sources) > 1 and not label.union:
                problems.append((Reason.AMBIGUOUS_ROI, f"ROIs {sorted(sources)} all match label {label.name}"))
        present = set(label_of_roi.values()) | contested
        missing = [label.name for label in self.labels if label.name not in present]
        for name in self.required:
            if name in missing:
                reason = Reason.NO_GTVP if name == TUMOUR_LABEL else Reason.MISSING_REQUIRED_LABEL
                problems.append((reason, f"no ROI matches required label {name}"))
        return RoiMapping(label_of_roi, unmapped, ignored, missing, problems)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    def structure_id_problems(self) -> list[str]:
        """Why the labels cannot be exported as structures (empty when they can): ids too long or not unique."""
        problems = [
            f"{label.name} is longer than {STRUCTURE_ID_LENGTH} characters: give it a roi_name"
            for label in self.labels
            if len(label.structure_id) > STRUCTURE_ID_LENGTH
        ]
        seen: dict[str, str] = {}
        for label in self.labels:
            other = seen.setdefault(label.structure_id.casefold(), label.name)
            if other != label.name:
                problems.append(f"{other} and {label.name} share the structure id {label.structure_id!r}")
        return problems

    def pseudolabel_tasks(self) -> list[str]:
        """TotalSegmentator tasks any label draws on, in first-use order."""
        tasks = [s.task for label in self.labels for s in label.sources if isinstance(s, PseudoLabelSource)]
        return list(dict.fromkeys(tasks))


def describe_source(label: Label, source: str | PseudoLabelSource) -> str:
    """A source of a label in words."""
    if isinstance(source, PseudoLabelSource):
        return f"TotalSegmentator {source.task}/{source.cls}"
    if source == "body":
        return "body mask minus the other labels"
    return "RTSTRUCT " + ", ".join(p.pattern for p in label.rtstruct_patterns)


def _compile(patterns: object, where: str) -> tuple[re.Pattern[str], ...]:
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise DictionaryError(f"{where}: expected a list of pattern strings")
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(normalise_roi_name(pattern)))
        except re.error as exc:
            raise DictionaryError(f"{where}: invalid pattern {pattern!r}: {exc}") from exc
    return tuple(compiled)


def _parse_label(entry: Any, n: int) -> Label:
    where = f"labels[{n}]"
    if not isinstance(entry, dict):
        raise DictionaryError(f"{where}: expected a mapping with id, name and sources")
    unknown_keys = set(entry) - {"id", "name", "required", "multiple", "sources", "description", *DISPLAY_KEYS}
    if unknown_keys:
        raise DictionaryError(f"{where}: unknown keys {sorted(unknown_keys)}")
    label_id, name = entry.get("id"), entry.get("name")
    if not isinstance(label_id, int) or isinstance(label_id, bool):
        raise DictionaryError(f"{where}: id must be an integer")
    if label_id == 0:
        raise DictionaryError(f"{where} ({name}): id 0 is reserved for background")
    if not 0 < label_id < 256:
        raise DictionaryError(f"{where} ({name}): id {label_id} outside 1..255 (label maps are uint8)")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise DictionaryError(f"{where}: name {name!r} must be an identifier (letters, digits, _)")
    multiple = entry.get("multiple", "ambiguous")
    if multiple not in ("ambiguous", "union"):
        raise DictionaryError(f"{where} ({name}): multiple must be 'ambiguous' or 'union'")
    patterns: tuple[re.Pattern[str], ...] = ()
    sources: list[str | PseudoLabelSource] = []
    for m, source in enumerate(entry.get("sources") or []):
        where_source = f"{where}.sources[{m}]"
        if not isinstance(source, dict) or len(source) != 1:
            raise DictionaryError(f"{where_source}: expected one mapping like {{rtstruct: [...]}}")
        kind, value = next(iter(source.items()))
        if kind not in KNOWN_SOURCES:
            raise DictionaryError(f"{where_source}: unknown source {kind!r}; known: {KNOWN_SOURCES}")
        if kind == "rtstruct":
            patterns += _compile(value, f"{where_source}.rtstruct")
            sources.append("rtstruct")
        elif kind == "totalsegmentator":
            if not isinstance(value, dict) or not {"task", "class"} <= set(value):
                raise DictionaryError(f"{where_source}: totalsegmentator needs {{task: ..., class: ...}}")
            sources.append(PseudoLabelSource(str(value["task"]), str(value["class"])))
        else:
            sources.append("body")
    if not sources:
        raise DictionaryError(f"{where} ({name}): no source; give rtstruct patterns, a totalsegmentator class or body")
    return Label(
        label_id,
        name,
        patterns,
        bool(entry.get("required", False)),
        multiple == "union",
        tuple(sources),
        **_display(entry, label_id, name, sources, where),
    )


DISPLAY_KEYS = ("roi_name", "type", "colour")


def default_type(name: str, sources: list[str | PseudoLabelSource]) -> RoiType:
    """GTV/CTV/PTV by the name's prefix, EXTERNAL for a body label, else ORGAN."""
    prefix = name[:3].upper()
    if prefix in (RoiType.GTV, RoiType.CTV, RoiType.PTV):
        return RoiType(prefix)
    return RoiType.EXTERNAL if "body" in sources else RoiType.ORGAN


def _display(
    entry: dict[str, Any], label_id: int, name: str, sources: list[str | PseudoLabelSource], where: str
) -> dict[str, Any]:
    """The exported face of a label: structure id, RTROIInterpretedType and colour, checked."""
    roi_name = entry.get("roi_name", "")
    if not isinstance(roi_name, str) or not re.fullmatch(f"[ -~]{{0,{STRUCTURE_ID_LENGTH}}}", roi_name):
        raise DictionaryError(
            f"{where} ({name}): roi_name {roi_name!r} must be at most {STRUCTURE_ID_LENGTH} printable ASCII characters"
        )
    kind = entry.get("type", default_type(name, sources))
    try:
        roi_type = RoiType(kind)
    except ValueError:
        raise DictionaryError(f"{where} ({name}): type {kind!r} is not one of {[t.value for t in RoiType]}") from None
    colour = entry.get("colour", TUMOUR_COLOURS.get(roi_type, PALETTE[(label_id - 1) % len(PALETTE)]))
    if (
        not isinstance(colour, list | tuple)
        or len(colour) != 3
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour)
    ):
        raise DictionaryError(f"{where} ({name}): colour must be three integers 0..255 (RGB), not {colour!r}")
    return {"roi_name": roi_name, "type": roi_type, "colour": tuple(colour)}


def _first_repeat(values: list[Any]) -> tuple[int, int] | None:
    """The positions of the first value that occurs twice."""
    seen: dict[Any, int] = {}
    for n, value in enumerate(values):
        if value in seen:
            return seen[value], n
        seen[value] = n
    return None


def parse_dictionary(text: str, origin: str = "<string>") -> OrganDictionary:
    """Parse and validate a dictionary from YAML text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DictionaryError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise DictionaryError(f"{origin}: expected a mapping at the top level")
    for key in ("name", "version", "labels"):
        if key not in data:
            raise DictionaryError(f"{origin}: missing key {key!r}")
    try:
        labels = tuple(_parse_label(entry, n) for n, entry in enumerate(data["labels"]))
    except DictionaryError as exc:
        raise DictionaryError(f"{origin}: {exc}") from exc
    names = [label.name for label in labels]
    for what, values in (("id", [label.id for label in labels]), ("name", [n.casefold() for n in names])):
        pair = _first_repeat(values)
        if pair is not None:
            a, b = (labels[n] for n in pair)
            raise DictionaryError(
                f"{origin}: labels[{pair[0]}] ({a.name}, id {a.id}) and labels[{pair[1]}] ({b.name}, id {b.id}) "
                f"share the {what} {a.id if what == 'id' else repr(b.name)}"
            )
    for label in labels:
        for pattern in label.rtstruct_patterns:
            if re.escape(pattern.pattern) != pattern.pattern.replace(" ", "\\ "):
                continue  # only literal names can be checked against the other labels
            others = [o.name for o in labels if o is not label and o.matches(pattern.pattern)]
            if others:
                raise DictionaryError(f"{origin}: ROI name {pattern.pattern!r} of {label.name} also matches {others}")
    default_order = [n for n in names if n != TUMOUR_LABEL] + [n for n in names if n == TUMOUR_LABEL]
    order = data.get("precedence") or default_order
    if sorted(order) != sorted(names):
        raise DictionaryError(f"{origin}: precedence must list every label exactly once")
    if TUMOUR_LABEL in names and order[-1] != TUMOUR_LABEL:
        raise DictionaryError(f"{origin}: precedence must end with {TUMOUR_LABEL} (the tumour is written last)")
    return OrganDictionary(
        name=str(data["name"]),
        version=str(data["version"]),
        description=str(data.get("description", "")).strip(),
        labels=labels,
        precedence=tuple(order),
        ignore=_compile(data.get("ignore", []), f"{origin}: ignore"),
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def builtin_names() -> list[str]:
    """Names of the dictionaries shipped with tsretrain."""
    folder = resources.files("tsretrain.labels") / "dictionaries"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def dictionary_text(name_or_path: str) -> str:
    """The YAML of a shipped dictionary by name, or of a user's file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise DictionaryError(f"dictionary file {path} does not exist")
        return path.read_text()
    if name_or_path not in builtin_names():
        raise DictionaryError(f"unknown dictionary {name_or_path!r}; shipped: {builtin_names()} or a YAML path")
    return (resources.files("tsretrain.labels") / "dictionaries" / f"{name_or_path}.yaml").read_text()


def load_dictionary(name_or_path: str) -> OrganDictionary:
    """Load a shipped dictionary by name, or a user's YAML file by path: parsed once per process for the same text
    (a conversion worker asks for it per case), read again each time (a changed file is parsed anew)."""
    return _parsed(dictionary_text(name_or_path), name_or_path)


@functools.lru_cache(maxsize=8)
def _parsed(text: str, name_or_path: str) -> OrganDictionary:
    return parse_dictionary(text, name_or_path)
