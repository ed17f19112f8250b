"""The scan's memory is flat in the number of files: header records live on disk (its SQLite index) and the
cases are planned one patient at a time, so at no point does the process hold more than a chunk of records
being read or one patient's records being planned."""

from __future__ import annotations

import gc
import json
import logging
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from tsretrain.conversion import scan as scan_module
from tsretrain.conversion.header_index import HeaderIndex
from tsretrain.conversion.headers import FileRecord
from tsretrain.conversion.scan import CHUNK, INDEX_FILE, ScanConfig, scan
from tsretrain.sizing import SCAN_BYTES_PER_CASE, SCAN_INDEX_PER_FILE
from tsretrain.storage.store import REQUESTS_IN_FLIGHT


def live_records() -> int:
    return sum(isinstance(thing, FileRecord) for thing in gc.get_objects())


@pytest.mark.parametrize("remote", [False, True], ids=["folder", "store"])
def test_the_scan_holds_a_chunk_or_one_patients_records_never_every_files(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: bool
) -> None:
    """On the edge-case cohort (copies, files without PatientID, UIDs shared across patients, several series a
    patient), from a folder and from a store URI: the most header records alive while reading is one chunk (or
    the requests in flight), while planning one patient's."""
    most = {"reading": 0, "planning": 0}
    add, plan_patient = HeaderIndex.add, scan_module.plan_patient

    def counting_add(index: HeaderIndex, records: Any) -> None:
        most["reading"] = max(most["reading"], live_records())
        add(index, records)

    def counting_plan(patient_id: str, records: list[FileRecord], *args: Any, **kwargs: Any) -> Any:
        most["planning"] = max(most["planning"], live_records() - len(records))  # beyond the patient's own
        sizes.append(len(records))
        return plan_patient(patient_id, records, *args, **kwargs)

    sizes: list[int] = []
    monkeypatch.setattr(HeaderIndex, "add", counting_add)
    monkeypatch.setattr(scan_module, "plan_patient", counting_plan)
    source = (cohort / "dicom").as_uri() if remote else cohort / "dicom"
    result = scan(ScanConfig(input=source, out=tmp_path / "scan", workers=1))
    files = result.counts["files"]
    assert files > 4 * max(sizes) and files > 4 * CHUNK, (files, sizes)
    assert most["reading"] <= CHUNK + (2 * REQUESTS_IN_FLIGHT if remote else 0), most  # the chunk, the requests
    assert most["planning"] == 0, most  # nothing but the patient being planned
    assert not (tmp_path / "scan" / INDEX_FILE).exists()  # the index is gone with the scan
    inventory = json.loads((tmp_path / "scan" / "inventory.json").read_text())
    assert len(inventory["cases"]) == result.counts["cases"] == len(sizes)


def test_what_the_scan_keeps_a_case_and_its_index_a_file_are_the_sizings(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What stays in memory per case planned (garbage collected) and the index's bytes per file are within the
    figures that size the scan's pod (``tsretrain.sizing``)."""
    retained: list[int] = []
    index_bytes: list[int] = []
    plan_cases, close = scan_module.plan_cases, HeaderIndex.close

    def measured_plans(*args: Any, **kwargs: Any) -> Any:
        for plan in plan_cases(*args, **kwargs):
            gc.collect()
            retained.append(tracemalloc.get_traced_memory()[0])
            yield plan

    def measured_close(index: HeaderIndex) -> None:
        index_bytes.append(index.path.stat().st_size)
        close(index)

    monkeypatch.setattr(scan_module, "plan_cases", measured_plans)
    monkeypatch.setattr(HeaderIndex, "close", measured_close)
    logging.disable(logging.INFO)  # pytest keeps every log record of a test: the excluded cases' lines
    tracemalloc.start()
    try:
        # batches of one case: what stays after each case, not the fan-out batch of plans being written
        result = scan(ScanConfig(input=cohort / "dicom", out=tmp_path / "scan", workers=1, batch_size=1))
    finally:
        tracemalloc.stop()
        logging.disable(logging.NOTSET)
    per_case = (retained[-1] - retained[5]) / (len(retained) - 6)  # the first cases import and warm caches
    assert 0 < per_case < SCAN_BYTES_PER_CASE, per_case
    assert index_bytes[0] / result.counts["files"] < SCAN_INDEX_PER_FILE, index_bytes[0] / result.counts["files"]
