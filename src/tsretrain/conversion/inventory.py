"""The scan's outputs written a case at a time: ``inventory.json`` and each fan-out batch's own slice of it
(``batches/<id>.json``), so that no output needs every case plan in memory."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from tsretrain.conversion.plan import CasePlan
from tsretrain.layout import batch_id
from tsretrain.run_files import BATCH, INVENTORY
from tsretrain.sizing import CaseWork, case_work
from tsretrain.storage.atomic import atomic_write_text, staged_file


class InventoryWriter:
    """Writes a fan-out batch of case plans at a time into an open inventory (its header already written) and,
    with ``slices``, each batch's own inventory under ``out/batches``; keeps each case's work and the batches' case
    ids (a line per case, not per file)."""

    def __init__(self, handle: TextIO, out: Path, header: dict[str, Any], slices: bool) -> None:
        self.handle, self.out, self.header, self.slices = handle, out, header, slices
        self.work: dict[str, CaseWork] = {}
        self.batches: list[tuple[str, ...]] = []

    def add(self, batch: list[CasePlan]) -> None:
        """Write one batch's plans."""
        cases = [plan.to_json() for plan in batch]
        for case in cases:
            self.handle.write(("\n" if not self.work else ",\n") + json.dumps(case, indent=1))
            self.work[case["case_id"]] = case_work(case)
        ids = tuple(case["case_id"] for case in cases)
        self.batches.append(ids)
        if self.slices:
            slice_ = json.dumps({**self.header, "cases": cases}, indent=1)
            atomic_write_text(BATCH.at(self.out, batch=batch_id(ids)), slice_)

    def batch_ids(self) -> list[str]:
        """The batches' ids (a fan-out's items)."""
        return [batch_id(ids) for ids in self.batches]


@contextlib.contextmanager
def inventory_writer(out: Path, header: dict[str, Any], slices: bool) -> Iterator[InventoryWriter]:
    """An :class:`InventoryWriter` on ``out/inventory.json``, which appears (whole, by a rename) only when the
    block ends without an exception; with ``slices``, an earlier scan's batches are removed first."""
    if slices:
        shutil.rmtree(BATCH.folder(out), ignore_errors=True)
    with staged_file(INVENTORY.at(out)) as tmp, tmp.open("w") as handle:
        head = json.dumps(header, indent=1)
        handle.write(head[: head.rindex("}")].rstrip() + ',\n "cases": [')
        yield InventoryWriter(handle, out, header, slices)
        handle.write("\n ]\n}\n")
