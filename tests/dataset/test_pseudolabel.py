"""The 90-label map: the dictionary against TotalSegmentator, the merge of sources, the missing-weights error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tsretrain.cli import app
from tsretrain.dataset.merge import MergeInputs, body_mask, merge_labels
from tsretrain.dataset.pseudolabel import PseudolabelError, check_weights, required_weights
from tsretrain.labels.dictionary import DictionaryError, PseudoLabelSource, load_dictionary, parse_dictionary
from tsretrain.totalseg.models import TotalSegmentatorError, task_models

TS90 = load_dictionary("radcure-ts90")
HEAD_TASKS = [
    "head_glands_cavities",
    "head_muscles",
    "headneck_bones_vessels",
    "headneck_muscles",
    "oculomotor_muscles",
    "craniofacial_structures",
]


def test_radcure_ts90_ids_names_and_sources() -> None:
    assert sorted(label.id for label in TS90.labels) == list(range(1, 91))
    assert TS90.by_name("GTVp").id == 26 and TS90.by_name("GTVp").required
    assert TS90.by_name("other_tissue").sources == ("body",)
    assert sorted(TS90.pseudolabel_tasks()) == sorted(HEAD_TASKS)
    assert TS90.precedence[0] == "other_tissue" and TS90.precedence[-1] == "GTVp"
    parotid = TS90.by_name("parotid_gland_left")
    assert parotid.sources[0] == "rtstruct" and parotid.matches("Parotid_L")


def test_dictionary_classes_match_the_installed_totalsegmentator() -> None:
    """A TotalSegmentator upgrade that renames or adds a class of these tasks fails here."""
    from totalsegmentator.map_to_binary import class_map

    used = {(s.task, s.cls) for label in TS90.labels for s in label.sources if isinstance(s, PseudoLabelSource)}
    for task, cls in used:
        assert cls in class_map[task].values(), f"{task}/{cls} no longer exists in TotalSegmentator"
    installed = {name for task in HEAD_TASKS for name in class_map[task].values()}
    assert installed == {cls for _, cls in used}
    assert len(installed) == 88


def test_pseudolabel_source_needs_task_and_class() -> None:
    text = "name: x\nversion: '1'\nlabels:\n  - {id: 1, name: a, sources: [totalsegmentator: {task: t}]}\n"
    with pytest.raises(DictionaryError, match="needs"):
        parse_dictionary(text)


DICT = parse_dictionary(
    """
name: merge-test
version: "1"
labels:
  - {id: 1, name: GTVp, required: true, sources: [rtstruct: [gtvp]]}
  - id: 2
    name: parotid
    sources: [rtstruct: [parotid_l], totalsegmentator: {task: glands, class: parotid_gland_left}]
  - {id: 3, name: tongue, sources: [totalsegmentator: {task: muscles, class: tongue}]}
  - {id: 4, name: hyoid, sources: [totalsegmentator: {task: bones, class: hyoid}]}
  - {id: 5, name: other_tissue, sources: [body: {}]}
precedence: [other_tissue, parotid, tongue, hyoid, GTVp]
"""
)


def inputs(manual_parotid: bool) -> MergeInputs:
    shape = (4, 20, 20)
    manual = np.zeros(shape, np.uint8)
    manual[1:3, 2:6, 2:6] = 1  # GTVp
    present = {"GTVp"}
    if manual_parotid:
        manual[1:3, 10:14, 10:14] = 2
        present.add("parotid")
    glands = np.zeros(shape, np.uint8)
    glands[1:3, 9:13, 9:13] = 7  # TotalSegmentator's parotid_gland_left
    muscles = np.zeros(shape, np.uint8)
    muscles[1:3, 0:5, 0:5] = 9  # tongue, overlapping the GTVp corner
    hu = np.full(shape, -1000, np.int16)
    hu[:, 1:19, 1:19] = 40
    return MergeInputs(
        manual,
        present,
        {"glands": glands, "muscles": muscles},
        {"glands": {"parotid_gland_left": 7}, "muscles": {"tongue": 9}},
        hu,
    )


def test_manual_contour_wins_then_pseudo_label_and_gtvp_is_written_last() -> None:
    labels, report = merge_labels(DICT, inputs(manual_parotid=True))
    assert report["sources"]["parotid"] == "rtstruct"
    assert (labels[1:3, 10:14, 10:14] == 2).all() and labels[1, 9, 9] != 2
    assert report["sources"]["tongue"] == "totalsegmentator:muscles/tongue"
    assert (labels[1:3, 2:6, 2:6] == 1).all()  # GTVp over the tongue
    overlap = {(o["first"], o["then"]): o["voxels"] for o in report["overlaps"]}
    assert overlap[("tongue (totalsegmentator:muscles/tongue)", "GTVp (rtstruct)")] == 2 * 3 * 3
    assert "hyoid" in report["missing_labels"] and report["sources"]["hyoid"] is None
    assert not (labels == 4).any()


def test_pseudo_label_fills_a_missing_manual_contour_or_wins_when_preferred() -> None:
    labels, report = merge_labels(DICT, inputs(manual_parotid=False))
    assert report["sources"]["parotid"] == "totalsegmentator:glands/parotid_gland_left"
    assert (labels[1:3, 9:13, 9:13] == 2).all()
    _, preferred = merge_labels(DICT, inputs(manual_parotid=True), prefer_manual=False)
    assert preferred["sources"]["parotid"] == "totalsegmentator:glands/parotid_gland_left"


def test_other_tissue_is_the_body_minus_every_other_label() -> None:
    data = inputs(manual_parotid=True)
    labels, report = merge_labels(DICT, data)
    body = body_mask(data.hu)  # type: ignore[arg-type]
    assert ((labels == 5) == (body & ~np.isin(labels, [1, 2, 3, 4]))).all()
    assert report["voxels"]["other_tissue"] == int((labels == 5).sum()) > 0
    assert not (labels[:, 0, :] == 5).any()  # air stays background


def test_missing_weights_name_what_to_provision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path))
    assert any("Dataset775_head_glands_cavities" in f for f in required_weights("head_glands_cavities"))
    with pytest.raises(PseudolabelError, match="Dataset777_head_muscles") as caught:
        check_weights(["head_muscles"], allow_download=False)
    assert "TOTALSEG_HOME_DIR" in str(caught.value)
    assert check_weights(["head_muscles"], allow_download=True)  # listed, not raised
    with pytest.raises(TotalSegmentatorError, match="unknown TotalSegmentator task"):
        required_weights("no_such_task")


def test_cli_reports_missing_weights_as_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "empty"))
    (tmp_path / "converted" / "cases").mkdir(parents=True)
    result = CliRunner().invoke(app, ["pseudolabel", str(tmp_path / "converted"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "weights missing" in result.output  # 2: never retried on a cluster


def test_weights_from_a_store_prefix_are_staged_to_local_disk(tmp_path: Path) -> None:
    from tsretrain.dataset.pseudolabel import stage_weights

    store = tmp_path / "store" / "nnunet" / "results" / "Dataset775_x"
    store.mkdir(parents=True)
    (store / "plans.json").write_text("{}")
    assert stage_weights(str(tmp_path / "home"), tmp_path / "cache") == tmp_path / "home"
    staged = stage_weights((tmp_path / "store").as_uri(), tmp_path / "cache")
    assert staged == tmp_path / "cache"
    assert (staged / "nnunet" / "results" / "Dataset775_x" / "plans.json").is_file()


def test_read_only_weights_and_a_writable_home_apart_with_statistics_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ReadOnlyMany weights claim: TotalSegmentator must not write its config.json there nor post statistics."""
    from totalsegmentator.config import get_config_key, setup_totalseg

    from tsretrain.dataset.pseudolabel import use_weights

    monkeypatch.delenv("TOTALSEG_HOME_DIR", raising=False)
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    weights = tmp_path / "weights"
    for model in task_models("head_muscles"):  # the layout and class map, no network
        folder = weights / "nnunet" / "results" / model.model_folder
        folder.mkdir(parents=True)
        labels = {"background": 0} | {name: i for i, name in model.classes.items()}
        (folder / "dataset.json").write_text(json.dumps({"labels": labels}))
    before = sorted(p.relative_to(weights) for p in weights.rglob("*"))
    use_weights(weights, tmp_path / "home")
    assert check_weights(["head_muscles"], allow_download=False) == []
    setup_totalseg()  # what every TotalSegmentator call does first
    assert get_config_key("send_usage_stats") is False
    assert (tmp_path / "home" / "config.json").is_file()
    assert sorted(p.relative_to(weights) for p in weights.rglob("*")) == before  # nothing written to the weights
