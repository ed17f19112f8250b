"""Merge manual contours, TotalSegmentator pseudo-labels and the body mask into one label map.

Per label, the first *available* source in the dictionary's order of preference wins (manual contour before
pseudo-label unless configured otherwise). Labels are written in the dictionary's precedence order, GTVp
last; a body-derived label (other_tissue) takes the body voxels left unlabelled at the end. Voxels that a
later label takes from an earlier one are counted per pair of (label, source). A label with no available
source is recorded as missing, never written as background silently.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tsretrain.labels.dictionary import OrganDictionary, PseudoLabelSource

BODY_HU = -500.0
"""Voxels above this (HU) are candidates for the body mask (air is about -1000, fat about -100)."""


def body_mask(hu: NDArray[np.integer[Any]]) -> NDArray[np.bool_]:
    """The patient's body: the largest connected component above -500 HU, holes filled slice by slice."""
    from scipy import ndimage  # imported when used: the command line starts without scipy

    candidate: NDArray[np.bool_] = np.asarray(hu > BODY_HU, dtype=bool)
    components, count = ndimage.label(candidate)
    if count == 0:
        return candidate
    sizes = np.bincount(components.reshape(-1))
    sizes[0] = 0
    body: NDArray[np.bool_] = np.asarray(components == int(np.argmax(sizes)))
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return body


@dataclass
class MergeInputs:
    """Everything a case offers: the manual label map (dictionary ids), pseudo-label maps per task (the task's
    class ids) with their class names, and the CT (for the body mask)."""

    manual: NDArray[np.uint8]
    manual_present: set[str]
    pseudo: dict[str, NDArray[np.uint8]] = field(default_factory=dict)
    pseudo_classes: dict[str, dict[str, int]] = field(default_factory=dict)
    hu: NDArray[np.int16] | None = None


def _describe(source: str | PseudoLabelSource) -> str:
    return f"totalsegmentator:{source.task}/{source.cls}" if isinstance(source, PseudoLabelSource) else source


def merge_labels(
    dictionary: OrganDictionary, inputs: MergeInputs, prefer_manual: bool = True
) -> tuple[NDArray[np.uint8], dict[str, Any]]:
    """The merged label map and what happened: chosen source per label, missing labels, overlaps, voxels."""
    labels = np.zeros(inputs.manual.shape, dtype=np.uint8)
    chosen: dict[str, str | None] = {}
    writer_of: dict[int, str] = {}
    overlaps: dict[tuple[str, str], int] = defaultdict(int)
    body_labels = []
    for name in dictionary.precedence:
        label = dictionary.by_name(name)
        order = list(label.sources)
        if not prefer_manual:
            order.sort(key=lambda s: s == "rtstruct")
        mask = None
        chosen[name] = None
        for source in order:
            if source == "body":
                if inputs.hu is not None:
                    body_labels.append(label)
                    chosen[name] = "body"
                    break
                continue
            if source == "rtstruct":
                candidate = inputs.manual == label.id if name in inputs.manual_present else None
            else:
                assert isinstance(source, PseudoLabelSource)
                class_id = inputs.pseudo_classes.get(source.task, {}).get(source.cls)
                candidate = (
                    inputs.pseudo[source.task] == class_id
                    if class_id is not None and source.task in inputs.pseudo
                    else None
                )
            if candidate is not None and candidate.any():
                mask, chosen[name] = candidate, _describe(source)
                break
        if mask is None:
            continue
        taken = np.bincount(labels[mask], minlength=256)
        for other in np.nonzero(taken)[0]:
            if other not in (0, label.id):
                overlaps[(writer_of[int(other)], f"{name} ({chosen[name]})")] += int(taken[other])
        labels[mask] = label.id
        writer_of[label.id] = f"{name} ({chosen[name]})"
    if body_labels and inputs.hu is not None:
        free = body_mask(inputs.hu) & (labels == 0)
        labels[free] = body_labels[0].id
    counts = np.bincount(labels.reshape(-1), minlength=256)
    report = {
        "sources": chosen,
        "missing_labels": [
            n for n in dictionary.precedence if chosen[n] is None or not counts[dictionary.by_name(n).id]
        ],
        "overlaps": [{"first": a, "then": b, "voxels": n} for (a, b), n in sorted(overlaps.items())],
        "voxels": {label.name: int(counts[label.id]) for label in dictionary.labels},
    }
    return labels, report
