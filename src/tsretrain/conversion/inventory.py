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
from tsretrain.sizing import CaseWork, case_work
from tsretrain.storage.atomic import atomic_write_text, staged_file

INVENTORY = "inventory.json"
BATCHES = "batches"


class InventoryWriter:
    """Writes case plans into an open inventory (its header already written) and, with ``batch_size``, into
    batch slices of that many cases under ``out/batches``; keeps each case's work and the batches' case ids (a
    line per case, not per file)."""

    def __init__(self, handle: TextIO, out: Path, header: dict[str, Any], batch_size: int | None) -> None:
        self.handle, self.out, self.header, self.batch_size = handle, out, header, batch_size
        self.work: dict[str, CaseWork] = {}
        self.batches: list[tuple[str, ...]] = []
        self._batch: list[dict[str, Any]] = []

    def add(self, plan: CasePlan) -> None:
        """Write one case's plan."""
        case = plan.to_json()
        self.handle.write(("\n" if not self.work else ",\n") + json.dumps(case, indent=1))
        self.work[plan.case_id] = case_work(case)
        if self.batch_size is not None:
            self._batch.append(case)
            if len(self._batch) == self.batch_size:
                self._write_batch()

    def _write_batch(self) -> None:
        ids = tuple(case["case_id"] for case in self._batch)
        self.batches.append(ids)
        atomic_write_text(
            self.out / BATCHES / f"{batch_id(ids)}.json", json.dumps({**self.header, "cases": self._batch}, indent=1)
        )
        self._batch = []

    def finish(self) -> None:
        if self._batch:
            self._write_batch()
        self.handle.write("\n ]\n}\n")

    def batch_ids(self) -> list[str]:
        """The batches' ids (a fan-out's items)."""
        return [batch_id(ids) for ids in self.batches]


@contextlib.contextmanager
def inventory_writer(out: Path, header: dict[str, Any], batch_size: int | None) -> Iterator[InventoryWriter]:
    """An :class:`InventoryWriter` on ``out/inventory.json``, which appears (whole, by a rename) only when the
    block ends without an exception; an earlier scan's batches are removed first."""
    if batch_size is not None:
        shutil.rmtree(out / BATCHES, ignore_errors=True)
    with staged_file(out / INVENTORY) as tmp, tmp.open("w") as handle:
        head = json.dumps(header, indent=1)
        handle.write(head[: head.rindex("}")].rstrip() + ',\n "cases": [')
        writer = InventoryWriter(handle, out, header, batch_size)
        yield writer
        writer.finish()
