"""The scan's on-disk index of header records (SQLite), so that its memory stays flat in the number of files.

Every record read is written here at once; the checks that need every file (exact copies by SOP instance UID,
UIDs shared across patients, the patient a file without PatientID belongs to by its folder) are queries, and
the patients come back one at a time, in PatientID order, with their records in the order they were read.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsretrain.conversion.headers import UNLISTABLE_FOLDER, FileRecord, RecordKind

CASE_KINDS = (RecordKind.CT, RecordKind.RTSTRUCT, RecordKind.UNUSABLE)
"""The kinds of record that belong to a case (the others are counted, or listed as file-system problems)."""
_SQL_CASE_KINDS = "(" + ", ".join(f"'{kind}'" for kind in CASE_KINDS) + ")"
CACHE_KIB = 16 * 1024  # SQLite's page cache: its memory, whatever the index's size

_SCHEMA = """
CREATE TABLE records (
    seq INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    why TEXT NOT NULL,
    patient TEXT NOT NULL,
    series TEXT NOT NULL,
    sop TEXT NOT NULL,
    size INTEGER NOT NULL,
    copy INTEGER NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '',
    unidentified TEXT,
    record BLOB NOT NULL
);
CREATE TABLE listing (case_id TEXT PRIMARY KEY, row TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE pending (seq INTEGER PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL);
"""
_INDEXES = """
CREATE INDEX by_patient ON records (patient, sop);
CREATE INDEX by_path ON records (path);
CREATE INDEX by_owner ON records (owner) WHERE owner != '';
CREATE INDEX by_group ON records (unidentified) WHERE unidentified IS NOT NULL;
"""


@dataclass(frozen=True)
class Group:
    """The files of one case: a patient's (its own and those assigned to it by folder), or an unidentified
    folder's files without PatientID (``label``: ``unidentified-<folder>``)."""

    patient_id: str
    label: str = ""


class HeaderIndex:
    """Header records on disk, and the queries over every file that the scan's checks need.

    A new index replaces any file at ``path``; :meth:`close` deletes it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self.db = sqlite3.connect(path)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", f"cache_size = -{CACHE_KIB}", "temp_store = FILE"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)

    def add_pending(self, path: str, size: int = 0, mtime_ns: int = 0) -> None:
        """A file (object) whose header is still to be read."""
        self.db.execute("INSERT INTO pending (path, size, mtime_ns) VALUES (?, ?, ?)", (path, size, mtime_ns))

    def pending_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def pending(self) -> Iterator[tuple[str, int, int]]:
        """The files still to read, in the order listed (read while records are added)."""
        with closing(self.db.execute("SELECT path, size, mtime_ns FROM pending ORDER BY seq")) as cursor:
            yield from cursor

    def add(self, records: Iterable[FileRecord]) -> None:
        """Store records in the order given."""
        rows = (
            (r.path, r.kind, r.why_ignored, r.patient_id, r.series_uid, r.sop_uid, r.size, pickle.dumps(r))
            for r in records
        )
        self.db.executemany(
            "INSERT INTO records (path, kind, why, patient, series, sop, size, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def _records(self, query: str, *args: object) -> Iterator[FileRecord]:
        with closing(self.db.execute(query, args)) as cursor:
            for (blob,) in cursor:
                yield pickle.loads(blob)  # written by this process, from its own records

    def finish_reading(self, same_bytes: Callable[[str, str], bool]) -> dict[str, list[str]]:
        """After the last record: index, leave out exact copies of an instance within one patient (a note per copy,
        by patient), and give each file without PatientID the patient of its nearest folder that has one, or its
        unidentified group (its top folder, or ``root``)."""
        self.db.executescript(_INDEXES)
        notes = self._drop_copies(same_bytes)
        self._assign_orphans()
        return notes

    def _drop_copies(self, same_bytes: Callable[[str, str], bool]) -> dict[str, list[str]]:
        notes: dict[str, list[str]] = {}
        duplicated = self.db.execute(
            "SELECT patient, sop FROM records WHERE kind IN ('ct', 'rtstruct') "
            "GROUP BY patient, sop HAVING COUNT(*) > 1"
        ).fetchall()  # one row per duplicated instance: as many as the copies, not the files
        for patient, sop in duplicated:
            rows = self.db.execute(
                "SELECT seq, path, size FROM records WHERE patient = ? AND sop = ? AND kind IN ('ct', 'rtstruct') "
                "ORDER BY seq",
                (patient, sop),
            ).fetchall()
            _, original, size = rows[0]
            for seq, path, other_size in rows[1:]:
                if other_size == size and same_bytes(original, path):
                    self.db.execute("UPDATE records SET copy = 1 WHERE seq = ?", (seq,))
                    notes.setdefault(patient, []).append(f"{path} is an exact copy of {original}; ignored")
        return notes

    def _assign_orphans(self) -> None:
        orphans = self.db.execute(
            "SELECT seq, path, kind, why FROM records WHERE patient = '' AND kind != 'ignored' ORDER BY seq"
        ).fetchall()  # files without PatientID: unreadable ones, oddities, files missing UIDs
        for seq, path, kind, why in orphans:
            owner = self._folder_owner(path)
            if owner:
                self.db.execute("UPDATE records SET owner = ? WHERE seq = ?", (owner, seq))
            elif kind != RecordKind.SKIPPED:
                top, inside, _ = path.partition("/")
                is_folder = why.startswith(UNLISTABLE_FOLDER)
                group = top if inside or is_folder else "root"
                self.db.execute("UPDATE records SET unidentified = ? WHERE seq = ?", (group, seq))

    def _folder_owner(self, path: str) -> str:
        """The only patient with files below the nearest folder of ``path`` that holds any (``""``: none, or
        several)."""
        folder = path.rpartition("/")[0]
        while folder:
            owners = self.db.execute(
                "SELECT DISTINCT patient FROM records WHERE path > ? AND path < ? AND patient != '' AND copy = 0 "
                "LIMIT 2",
                (f"{folder}/", f"{folder}0"),  # "0" follows "/": every path below the folder
            ).fetchall()
            if owners:
                return str(owners[0][0]) if len(owners) == 1 else ""
            folder = folder.rpartition("/")[0]
        return ""

    def groups(self) -> list[Group]:
        """Every case's group: patients in PatientID order (those with only ignored files too, DICOMDIRs aside),
        then the unidentified folders. One entry per case, not per file."""
        patients = self.db.execute(
            "SELECT DISTINCT patient FROM records WHERE patient != '' AND copy = 0 "
            "AND NOT (kind = 'ignored' AND why = 'dicomdir') "
            "UNION SELECT owner FROM records WHERE owner != '' ORDER BY 1"
        ).fetchall()
        folders = self.db.execute(
            "SELECT DISTINCT unidentified FROM records WHERE unidentified IS NOT NULL ORDER BY 1"
        ).fetchall()
        return [Group(p) for (p,) in patients] + [Group("", f"unidentified-{f}") for (f,) in folders]

    def records_of(self, group: Group) -> list[FileRecord]:
        """A case's records: a patient's own in reading order, then the files assigned to it by folder."""
        kinds = "kind != 'ignored' AND copy = 0"
        if group.label:
            folder = group.label.removeprefix("unidentified-")
            return list(self._records("SELECT record FROM records WHERE unidentified = ? ORDER BY seq", folder))
        own = self._records(f"SELECT record FROM records WHERE patient = ? AND {kinds} ORDER BY seq", group.patient_id)
        assigned = self._records("SELECT record FROM records WHERE owner = ? ORDER BY seq", group.patient_id)
        return [*own, *assigned]

    def shared_uids(self) -> dict[str, set[str]]:
        """For each patient whose series or instance UIDs also occur under other PatientIDs, those PatientIDs."""
        self.db.executescript(
            f"""
            DROP TABLE IF EXISTS uids;
            CREATE TEMP TABLE uids AS
                SELECT uid, pid FROM (
                    SELECT series AS uid, CASE patient WHEN '' THEN owner ELSE patient END AS pid
                        FROM records WHERE kind IN {_SQL_CASE_KINDS} AND copy = 0
                    UNION
                    SELECT sop, CASE patient WHEN '' THEN owner ELSE patient END
                        FROM records WHERE kind IN {_SQL_CASE_KINDS} AND copy = 0
                ) WHERE uid != '' AND pid != '';
            CREATE INDEX temp.by_uid ON uids (uid);
            """
        )
        others: dict[str, set[str]] = {}
        pairs = self.db.execute(
            "SELECT DISTINCT a.pid, b.pid FROM uids a JOIN uids b ON a.uid = b.uid AND a.pid != b.pid"
        )
        for patient, other in pairs:
            others.setdefault(patient, set()).add(other)
        self.db.execute("DROP TABLE uids")
        return others

    def kinds(self) -> dict[str, int]:
        """Files by kind (exact copies left out), in order of first appearance."""
        rows = self.db.execute("SELECT kind, COUNT(*), MIN(seq) FROM records WHERE copy = 0 GROUP BY kind ORDER BY 3")
        return {kind: count for kind, count, _ in rows}

    def ignored(self, examples: int = 5) -> dict[str, dict[str, Any]]:
        """Ignored files by why (the part before any detail): their count and the first few."""
        found: dict[str, dict[str, Any]] = {}
        with closing(self.db.execute("SELECT path, why FROM records WHERE kind = 'ignored' ORDER BY seq")) as rows:
            for path, why in rows:
                entry = found.setdefault(why.split(":")[0].split(" (")[0], {"count": 0, "examples": []})
                entry["count"] += 1
                if len(entry["examples"]) < examples:
                    entry["examples"].append(f"{path}: {why}")
        return dict(sorted(found.items()))

    def file_system_problems(self) -> list[str]:
        """Entries that were skipped or could not be read, in reading order."""
        rows = self.db.execute("SELECT path, why FROM records WHERE kind IN ('skipped', 'unreadable') ORDER BY seq")
        return [f"{path}: {why}" for path, why in rows]

    def keep_listing_row(self, case_id: str, row: dict[str, Any]) -> None:
        """Hold a case's listing row until the listing is written."""
        self.db.execute("INSERT INTO listing VALUES (?, ?)", (case_id, json.dumps(row)))

    def listing_rows(self) -> Iterator[dict[str, Any]]:
        """The rows kept, in case id order."""
        with closing(self.db.execute("SELECT row FROM listing ORDER BY case_id")) as cursor:
            for (row,) in cursor:
                yield json.loads(row)
