"""Burning a structure set into a label map, checked by hand on a grid with unequal spacings: the voxels, the two
volumes, overlaps, the counts per label, and every kind of contour that is skipped, with where it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from support import contour, structure_set

from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.conversion.rtstruct import RoiContours, burn_label_map, read_structure_set, roi_contours
from tsretrain.reasons import CaseError, Reason

# 5 slices of 12 rows x 16 columns; a pixel is 0.5 mm (columns) x 1.5 mm (rows), a slice 3 mm.
GRID = VolumeGeometry((5, 12, 16), (10.0, -20.0, 30.0), (0.5, 1.5, 3.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
PIXEL_MM2, SLICE_MM = 0.75, 3.0
IDS = {"GTVp": 1, "Lips": 2, "Brainstem": 3, "Larynx": 4, "Parotid_L": 5}


def at(k: float, corners: list[tuple[float, float]]) -> list[float]:
    """Patient coordinates (flat x, y, z) of points given as continuous (column i, row j) on slice k."""
    return [v for i, j in corners for v in (10.0 + 0.5 * i, -20.0 + 1.5 * j, 30.0 + 3.0 * k)]


def box(k: float, i0: float, i1: float, j0: float, j1: float) -> list[float]:
    return at(k, [(i0, j0), (i1, j0), (i1, j1), (i0, j1)])


def test_voxels_volumes_overlaps_and_counts_by_hand() -> None:
    ds = structure_set(
        {
            # columns 2..5 (4.4 px wide), rows 2..4 (3 px high) on slices 1 and 2: 12 voxels each, 13.2 px2 each
            "brainstem": [contour(box(1, 1.2, 5.6, 1.5, 4.5)), contour(box(2, 1.2, 5.6, 1.5, 4.5))],
            # columns 4..7, rows 3..5 on slice 2: 12 voxels, 4 of them over the brainstem
            "GTV_primary": [contour(box(2, 3.5, 7.5, 2.5, 5.5))],
            # a second primary of the same label, disjoint: 2 x 2 on slice 3
            "GTVp2": [contour(box(3, 9.5, 11.5, 7.5, 9.5))],
            # too thin to hold a pixel centre
            "lip": [contour(box(0, 2.1, 2.4, 2.1, 6.9))],
            "unused": [contour(box(0, 0, 10, 0, 10))],
        }
    )
    mapping = {"brainstem": "Brainstem", "GTV_primary": "GTVp", "GTVp2": "GTVp", "lip": "Lips", "parotid": "Parotid_L"}
    labels, burn = burn_label_map(ds, GRID, mapping, IDS, ("Lips", "Parotid_L", "Brainstem", "GTVp"))

    expected = np.zeros((5, 12, 16), np.uint8)
    expected[1:3, 2:5, 2:6] = 3
    expected[2, 3:6, 4:8] = 1
    expected[3, 8:10, 10:12] = 1
    np.testing.assert_array_equal(labels, expected)
    assert burn.voxels.shape == (256,) and burn.voxels.dtype == np.int64
    np.testing.assert_array_equal(burn.voxels, np.bincount(expected.reshape(-1), minlength=256))
    assert burn.overlaps == [{"first": "Brainstem", "then": "GTVp", "voxels": 4}]

    def record(raw: str, label: str, contours: int, slices: int, voxels: int, area_px: float) -> dict[str, object]:
        mask_ml = voxels * PIXEL_MM2 * SLICE_MM / 1000
        polygon_ml = area_px * PIXEL_MM2 * SLICE_MM / 1000
        return {
            "raw_name": raw,
            "label": label,
            "label_id": IDS[label],
            "n_contours": contours,
            "n_slices": slices,
            "skipped": {},
            "voxels": voxels,
            "volume_ml_mask": round(mask_ml, 4),
            "volume_ml_polygon": round(polygon_ml, 4),
            "volume_rel_diff": round((mask_ml - polygon_ml) / polygon_ml, 4) if polygon_ml else None,
        }

    assert burn.rois == [  # in precedence order, raw names in order within a label
        record("lip", "Lips", 1, 1, 0, 0.3 * 4.8),
        record("parotid", "Parotid_L", 0, 0, 0, 0.0),  # mapped, but not in this structure set
        record("brainstem", "Brainstem", 2, 2, 24, 2 * 4.4 * 3.0),
        record("GTV_primary", "GTVp", 1, 1, 12, 12.0),
        record("GTVp2", "GTVp", 1, 1, 4, 4.0),
    ]
    assert burn.rois[2]["volume_ml_mask"] == 0.054 and burn.rois[2]["volume_rel_diff"] == -0.0909
    assert burn.warnings == ["ROI 'lip': contours present but no voxel centre inside them (too small)"]


def test_every_skipped_contour_is_counted_named_and_warned_about() -> None:
    slice_of_sop = {"1.2.3.30": 3, "1.2.3.40": 4}
    contours = [
        contour(box(1, 2, 8, 2, 8)),  # used
        contour(box(3, 2, 8, 2, 8), kind="OPEN_PLANAR", image="1.2.3.30"),  # named by its referenced slice
        contour(at(1, [(2, 2)]), kind="POINT", image="9.9.9"),  # unknown image: named by its position
        contour(None),  # no ContourData
        contour(b""),  # empty ContourData
        contour(at(2, [(1, 1), (5, 5)])),  # two points
        contour(b"1.0\\2.0\\abc\\4\\5\\6\\7\\8\\9", image="1.2.3.40"),  # a value that is no number
        contour(b"1\\2\\NaN\\4\\5\\6\\7\\8\\9 "),
        contour([*box(2, 2, 8, 2, 8)[:-1], 30.0 + 3.0 * 3]),  # a corner a slice off: 0.75 slices from the mean
        contour(box(2, -9, -0.6, 2, 8)),  # left of the image
        contour(box(4, 2, 8, 11.6, 20)),  # below the image
        contour(box(4, -3, 4, 2, 8)),  # partly left of the image: clipped, used
    ]
    roi = roi_contours(structure_set({"Larynx": contours}), GRID, {"Larynx"}, slice_of_sop)["Larynx"]
    assert roi.n_contours == 12 and sorted(roi.by_slice) == [1, 4]
    assert dict(roi.skipped) == {
        "not_closed": ["slice 3", "contour #3"],
        "empty": ["contour #4", "contour #5"],
        "too_few_points": ["contour #6"],
        "not_finite": ["slice 4", "contour #8"],
        "not_planar": ["contour #9"],
        "outside_field": ["slice 2", "slice 4"],
        "in_plane_clipped": ["slice 4"],
    }
    assert roi.warnings() == [
        "ROI 'Larynx': 2 empty contour(s) (no ContourData) skipped (contour #4, contour #5)",
        "ROI 'Larynx': 1 contour(s) extend outside the field of view (clipped) (slice 4)",
        "ROI 'Larynx': 2 POINT/OPEN contour(s) skipped (slice 3, contour #3)",
        "ROI 'Larynx': 2 contour(s) with NaN, infinite or unreadable coordinates skipped (slice 4, contour #8)",
        "ROI 'Larynx': 1 contour(s) not parallel to the CT slices skipped (contour #9)",
        "ROI 'Larynx': 2 contour(s) entirely outside the image skipped (slice 2, slice 4)",
        "ROI 'Larynx': 1 contour(s) with fewer than 3 points skipped (contour #6)",
    ]
    ds = structure_set({"Larynx": contours})
    labels, burn = burn_label_map(ds, GRID, {"Larynx": "Larynx"}, IDS, ("Larynx",), slice_of_sop)
    assert burn.rois[0]["skipped"] == {kind: len(where) for kind, where in roi.skipped.items()}
    assert burn.warnings == roi.warnings()
    assert labels[4, 2:8, 0:4].all() and labels[4].sum() == 4 * 6 * 4  # columns 0..3 of the clipped one


def test_the_planarity_limit_is_half_a_slice_either_way() -> None:
    half = at(2, [(2, 2), (8, 2), (8, 8), (2, 8)])
    for n, z in enumerate((1.5, 2.5, 1.5, 2.5)):
        half[3 * n + 2] = 30.0 + 3.0 * z  # 0.5 slices from the mean plane (2.0)
    roi = roi_contours(structure_set({"GTVp": [contour(half)]}), GRID, {"GTVp"})["GTVp"]
    assert list(roi.by_slice) == [2] and not roi.skipped


def test_long_lists_of_places_are_cut_after_ten() -> None:
    roi = RoiContours(3, "Parotid_L")
    roi.skipped["outside_scan"] = [f"plane at slice index {k}.50" for k in range(5, 17)]
    roi.skipped["not_planar"] = []
    assert roi.warnings() == [
        "ROI 'Parotid_L': 12 contour(s) beyond the first/last slice dropped (clipped along z) ("
        + ", ".join(f"plane at slice index {k}.50" for k in range(5, 15))
        + " and 2 more)"
    ]
    roi.skipped["outside_scan"] = roi.skipped["outside_scan"][:10]
    assert roi.warnings()[0].endswith("plane at slice index 14.50)")


def test_planes_beyond_the_series_are_dropped_or_mean_a_cut_series() -> None:
    ds = structure_set({"GTVp": [contour(box(k, 2, 8, 2, 8)) for k in (-1.5, 2, 5.3)]})
    roi = roi_contours(ds, GRID, {"GTVp"})["GTVp"]
    assert roi.skipped["outside_scan"] == ["plane at slice index -1.50", "plane at slice index 5.30"]
    assert roi.beyond_grid == []
    cut = structure_set(
        {
            "GTVp": [contour(box(k, 2, 8, 2, 8)) for k in (2, 5.04, 6)],
            "Brainstem": [contour(box(k, 2, 8, 2, 8)) for k in (-1, 3)],
        }
    )
    with pytest.raises(CaseError) as caught:
        burn_label_map(cut, GRID, {"GTVp": "GTVp", "Brainstem": "Brainstem"}, IDS, ("Brainstem", "GTVp"))
    assert caught.value.reason is Reason.REFERENCED_SLICES_MISSING
    assert caught.value.detail == (
        "ROI 'Brainstem' has contours on 1 slice position(s) beyond the ends of the 5-slice series "
        "(slice index -1): the series is cut"
    )
    (only,) = roi_contours(cut, GRID, {"GTVp"}).values()
    assert only.beyond_grid == pytest.approx([5.04, 6.0])


def test_rois_are_found_by_their_number_not_their_position() -> None:
    ds = structure_set({"Larynx": [contour(box(1, 2, 4, 2, 4))], "GTVp": [contour(box(3, 2, 8, 2, 8))]})
    ds.ROIContourSequence = Sequence(list(ds.ROIContourSequence)[::-1])
    found = roi_contours(ds, GRID, {"GTVp", "Larynx"})
    assert {name: (roi.number, list(roi.by_slice)) for name, roi in found.items()} == {
        "GTVp": (8, [3]),
        "Larynx": (7, [1]),
    }
    assert set(roi_contours(ds, GRID, {"GTVp"})) == {"GTVp"}
    assert set(roi_contours(ds, GRID, {"Larynx"})) == {"Larynx"}  # after an ROI not wanted


def test_overlaps_add_up_over_slices_and_a_slice_without_voxels_stops_nothing() -> None:
    ds = structure_set(
        {
            "stem": [contour(box(k, 1.5, 4.5, 1.5, 3.5)) for k in (1, 2)],  # 3 x 2 voxels on slices 1 and 2
            # slice 0: too thin for a voxel centre; slices 1 and 2: 2 x 2, one column over the stem
            "gtv": [contour(box(0, 2.1, 2.4, 2, 6)), *(contour(box(k, 3.5, 5.5, 1.5, 3.5)) for k in (1, 2))],
            "lips": [contour(box(3, 0.5, 7.5, 5.5, 6.5))],  # 7 voxels in one row
        }
    )
    mapping = {"stem": "Brainstem", "gtv": "GTVp", "lips": "Lips"}
    labels, burn = burn_label_map(ds, GRID, mapping, IDS, ("Lips", "Brainstem", "GTVp"))
    assert burn.overlaps == [{"first": "Brainstem", "then": "GTVp", "voxels": 2 + 2}]
    voxels = {roi["raw_name"]: (roi["voxels"], roi["n_slices"], roi["volume_ml_mask"]) for roi in burn.rois}
    voxel_ml = PIXEL_MM2 * SLICE_MM / 1000
    assert voxels == {
        "lips": (7, 1, round(7 * voxel_ml, 4)),  # 0.01575 mL, given to 4 decimals
        "stem": (12, 2, round(12 * voxel_ml, 4)),
        "gtv": (8, 3, round(8 * voxel_ml, 4)),
    }
    assert int((labels == IDS["GTVp"]).sum()) == 8 and int((labels == IDS["Brainstem"]).sum()) == 12 - 4


# The field of view, in continuous (column, row) indices: pixel edges -0.5 .. 15.5 and -0.5 .. 11.5.
FIELD_EDGES = [
    # (contour box i0, i1, j0, j1), what it is
    ((-3.0, -1.0, 2.0, 8.0), "outside_field"),  # left of the left edge
    ((-3.0, -0.5, 2.0, 8.0), "in_plane_clipped"),  # touching it from outside
    ((-1.0, 4.0, 2.0, 8.0), "in_plane_clipped"),  # across it
    ((-0.5, 4.0, 2.0, 8.0), "inside"),  # on it
    ((0.0, 4.0, 2.0, 8.0), "inside"),
    ((16.0, 20.0, 2.0, 8.0), "outside_field"),  # the right edge (15.5)
    ((15.5, 20.0, 2.0, 8.0), "in_plane_clipped"),
    ((10.0, 16.0, 2.0, 8.0), "in_plane_clipped"),
    ((10.0, 15.5, 2.0, 8.0), "inside"),
    ((10.0, 15.0, 2.0, 8.0), "inside"),
    ((2.0, 8.0, -3.0, -1.0), "outside_field"),  # the top edge (-0.5)
    ((2.0, 8.0, -3.0, -0.5), "in_plane_clipped"),
    ((2.0, 8.0, -1.0, 4.0), "in_plane_clipped"),
    ((2.0, 8.0, -0.5, 4.0), "inside"),
    ((2.0, 8.0, 0.0, 4.0), "inside"),
    ((2.0, 8.0, 12.0, 20.0), "outside_field"),  # the bottom edge (11.5)
    ((2.0, 8.0, 11.5, 20.0), "in_plane_clipped"),
    ((2.0, 8.0, 6.0, 12.0), "in_plane_clipped"),
    ((2.0, 8.0, 6.0, 11.5), "inside"),
    ((2.0, 8.0, 6.0, 11.0), "inside"),
]


@pytest.mark.parametrize(("corners", "kind"), FIELD_EDGES, ids=[f"{c}-{k}" for c, k in FIELD_EDGES])
def test_a_contour_is_outside_clipped_or_inside_by_the_edges_of_the_field(
    corners: tuple[float, float, float, float], kind: str
) -> None:
    roi = roi_contours(structure_set({"GTVp": [contour(box(2, *corners))]}), GRID, {"GTVp"})["GTVp"]
    skipped = {k: v for k, v in roi.skipped.items() if v}
    if kind == "inside":
        assert skipped == {} and list(roi.by_slice) == [2]
    elif kind == "outside_field":
        assert skipped == {"outside_field": ["slice 2"]} and roi.by_slice == {}
    else:
        assert skipped == {"in_plane_clipped": ["slice 2"]} and list(roi.by_slice) == [2]


def test_every_skipped_contour_names_its_referenced_slice() -> None:
    refs = {f"1.2.3.{k}": k for k in range(5)}
    contours = [
        contour(b"", image="1.2.3.0"),
        contour(at(2, [(1, 1), (5, 5)]), image="1.2.3.1"),
        contour(b"1\\2\\abc\\4\\5\\6\\7\\8\\9", image="1.2.3.2"),
        contour(b"1\\2\\NaN\\4\\5\\6\\7\\8\\9", image="1.2.3.3"),
        contour([*box(2, 2, 8, 2, 8)[:-1], 30.0 + 3.0 * 3], image="1.2.3.4"),
        contour(b"1\\2\\abc\\4\\5\\6\\7\\8\\9"),  # no reference: its position
    ]
    roi = roi_contours(structure_set({"GTVp": contours}), GRID, {"GTVp"}, refs)["GTVp"]
    assert dict(roi.skipped) == {
        "empty": ["slice 0"],
        "too_few_points": ["slice 1"],
        "not_finite": ["slice 2", "slice 3", "contour #6"],
        "not_planar": ["slice 4"],
    }


def test_contour_data_as_files_write_it_null_padded_or_with_a_stray_value() -> None:
    points = box(2, 2, 8, 2, 8)
    text = "\\".join(f"{v:g}" for v in points).encode()
    padded = contour(text + b"\0")  # an odd length padded with a null instead of a space
    stray = contour(text + b"\\7")  # a thirteenth value: the incomplete point is dropped
    for item in (padded, stray):
        roi = roi_contours(structure_set({"GTVp": [item]}), GRID, {"GTVp"})["GTVp"]
        assert not any(roi.skipped.values()) and list(roi.by_slice) == [2]
        np.testing.assert_allclose(roi.by_slice[2][0], [[2, 2], [8, 2], [8, 8], [2, 8]])


def test_a_structure_set_without_rois_or_contours_has_none() -> None:
    assert roi_contours(Dataset(), GRID, {"GTVp"}) == {}
    labels, burn = burn_label_map(Dataset(), GRID, {"gtv": "GTVp"}, IDS, ("GTVp",))
    assert not labels.any() and burn.rois[0]["n_contours"] == 0 and burn.warnings == []


def test_a_structure_set_without_preamble_is_read() -> None:
    """pydicom's own rtstruct.dcm has no 128-byte preamble and no file meta, as some exports do."""
    path = Path(str(get_testdata_file("rtstruct.dcm")))
    assert path.read_bytes()[128:132] != b"DICM"
    ds = read_structure_set(path)
    assert [str(roi.ROIName) for roi in ds.StructureSetROISequence] == ["patient", "Isocenter 1", "Isocenter 2"]
