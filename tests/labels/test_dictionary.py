"""Organ dictionaries: validation errors, ROI name mapping, ambiguity."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsretrain.labels.dictionary import DictionaryError, builtin_names, load_dictionary, parse_dictionary
from tsretrain.reasons import Reason

VALID = """
name: test
version: "1"
labels:
  - {id: 1, name: GTVp, required: true, multiple: union, sources: [rtstruct: ["gtvp", "gtvp\\\\d+"]]}
  - {id: 2, name: Parotid_L, sources: [rtstruct: ["parotid_l"]]}
"""


def test_shipped_dictionary_loads() -> None:
    assert "radcure-oar21" in builtin_names()
    d = load_dictionary("radcure-oar21")
    assert len(d.labels) == 21
    assert d.by_name("GTVp").id == 1 and d.by_name("GTVp").required
    assert d.precedence[-1] == "GTVp"
    assert d.nnunet_labels()["background"] == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (VALID.replace("id: 2", "id: 1"), r"labels\[0\] \(GTVp, id 1\) and labels\[1\] \(\w+, id 1\) share the id 1"),
        (
            VALID.replace("name: Parotid_L", "name: gtvp"),
            r"labels\[0\] \(GTVp, id 1\) and labels\[\d\] \(gtvp, id \d\) share the name",
        ),
        (VALID.replace("id: 2", "id: 0"), "reserved for background"),
        (VALID.replace("id: 2", "id: 300"), "outside 1..255"),
        (VALID.replace('rtstruct: ["parotid_l"]', 'totalseg: ["x"]'), "unknown source"),
        (VALID.replace('"parotid_l"', '"gtvp"'), "also matches"),
        (VALID.replace('"parotid_l"', '"paro("'), "invalid pattern"),
        (VALID + "precedence: [GTVp, Parotid_L]\n", "must end with GTVp"),
        ("labels: []", "missing key"),
        ("name: [unclosed", "not valid YAML"),
    ],
)
def test_invalid_dictionaries_are_refused_with_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(DictionaryError, match=message):
        parse_dictionary(text, "test.yaml")


def test_user_yaml_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(VALID)
    assert load_dictionary(str(path)).name == "test"
    with pytest.raises(DictionaryError, match="does not exist"):
        load_dictionary(str(tmp_path / "missing.yaml"))
    with pytest.raises(DictionaryError, match="unknown dictionary"):
        load_dictionary("no-such-dictionary")


def test_a_dictionary_is_parsed_once_per_process_until_its_file_changes(tmp_path: Path) -> None:
    """A conversion worker asks for the dictionary per case: the same text gives the same parsed dictionary; an
    edited file is parsed anew (never a stale one)."""
    assert load_dictionary("radcure-oar21") is load_dictionary("radcure-oar21")
    path = tmp_path / "mine.yaml"
    path.write_text(VALID)
    first = load_dictionary(str(path))
    assert load_dictionary(str(path)) is first
    path.write_text(VALID.replace('version: "1"', 'version: "2"'))
    assert load_dictionary(str(path)).version == "2" and first.version == "1"


def test_mapping_variants_union_and_ambiguity() -> None:
    d = load_dictionary("radcure-oar21")
    mapping = d.map_rois(["gtvp ", "GTVp2", "Bone_Mandible", "OpticNrv_L", "BODY", "PTV70", "Mystery"])
    assert mapping.label_of_roi == {
        "gtvp ": "GTVp",
        "GTVp2": "GTVp",
        "Bone_Mandible": "Mandible_Bone",
        "OpticNrv_L": "Nrv_Optic_L",
    }
    assert mapping.unmapped == ["Mystery"] and mapping.ignored == ["BODY", "PTV70"]
    assert not mapping.problems
    duplicate = d.map_rois(["GTVp", "GTVP"])
    assert [r for r, _ in duplicate.problems] == [Reason.AMBIGUOUS_ROI]
    two_parotids = d.map_rois(["GTVp", "Parotid_L", "L_Parotid"])
    assert [r for r, _ in two_parotids.problems] == [Reason.AMBIGUOUS_ROI]
    assert [r for r, _ in d.map_rois(["Parotid_L"]).problems] == [Reason.NO_GTVP]
