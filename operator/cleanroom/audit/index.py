"""A query index over the audit spool: SQLite beside the chain, brought up to date incrementally.

The chain file stays the record of truth. The index holds, per record, only where its line lies in
records.jsonl and the columns to filter on; every answer is read back from the chain at those places and
filtered again, so a tampered index (a row added, a row pointed elsewhere, a column edited) can never make the
page or an export show what the chain does not hold. When a row read back disagrees, or the chain no longer
ends where the index last read it, the index is rebuilt from the chain. Hiding a row (editing its filter
columns) is the one thing a query cannot notice; `check()` compares every row with the chain and rebuilds,
and the officers' "Verify" runs it. Deleting the index is harmless: the next query rebuilds it.

The index is a convenience, never a condition for reading the trail: `find` answers from the chain itself when
SQLite cannot (a read-only copy of a trail, a damaged or unwritable index file, a failing disk), and says so in
the log; a damaged file is set aside and rebuilt on the next query."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any, BinaryIO

from cleanroom.audit.spool import RECORDS, matching, read_lines

LOGGER = logging.getLogger("cleanroom.audit.index")
INDEX = "index.sqlite"
FILTERS = ("actor", "action", "dataset", "workspace", "since", "until")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
  seq INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  dataset TEXT, workspace TEXT, at INTEGER NOT NULL, length INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS by_actor ON records (actor, seq);
CREATE INDEX IF NOT EXISTS by_action ON records (action, seq);
CREATE INDEX IF NOT EXISTS by_dataset ON records (dataset, seq);
CREATE INDEX IF NOT EXISTS by_workspace ON records (workspace, seq);
CREATE INDEX IF NOT EXISTS by_time ON records (time);
CREATE TABLE IF NOT EXISTS progress (id INTEGER PRIMARY KEY CHECK (id = 1), offset INTEGER NOT NULL);
"""


class IndexDisagrees(Exception):
    """A row read back from the chain is not what the index said."""


class AuditIndex:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.db = sqlite3.connect(self.directory / INDEX)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(records)")}
        if columns and "at" not in columns:  # an index from before rows pointed into the chain
            self._drop()
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _drop(self) -> None:
        with self.db:
            self.db.execute("DROP TABLE IF EXISTS records")
            self.db.execute("DROP TABLE IF EXISTS progress")

    def rebuild(self) -> int:
        self._drop()
        self.db.executescript(_SCHEMA)
        return self.refresh()

    def refresh(self) -> int:
        """Index what was appended since the last refresh; returns how many records that was. When the chain
        no longer holds, at the index's last row, the record the index read there, it starts over."""
        path = self.directory / RECORDS
        if not path.exists():
            return 0
        row = self.db.execute("SELECT offset FROM progress WHERE id = 1").fetchone()
        offset = int(row[0]) if row else 0
        rows = []
        with path.open("rb") as records:
            last = self.db.execute(
                "SELECT seq, at, length, hash FROM records ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            if last is not None and (
                last[1] + last[2] != offset or _hash_at(records, last[1], last[2]) != last[3]
            ):
                LOGGER.warning(
                    "the audit index no longer matches the chain at record %s: rebuilding it", last[0]
                )
                return self.rebuild()
            records.seek(offset)
            for line in records:
                if not line.endswith(b"\n"):
                    break
                record = json.loads(line)
                event = record["event"]
                resources = event.get("resources") or {}
                rows.append(
                    (
                        record["seq"],
                        event["time"],
                        event["actor"]["name"],
                        event["action"],
                        resources.get("dataset"),
                        resources.get("workspace"),
                        offset,
                        len(line),
                        record["hash"],
                    )
                )
                offset += len(line)
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self.db.execute("INSERT OR REPLACE INTO progress (id, offset) VALUES (1, ?)", (offset,))
        return len(rows)

    def query(
        self,
        filters: Mapping[str, str] | None = None,
        *,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """The records matching every filter (actor, action, dataset, workspace, since, until) as
        `spool.matching` defines them; action accepts a prefix ending in '.'. Each is read from the chain."""
        filters = dict(filters or {})
        try:
            found = self._read_back(filters, limit, newest_first)
        except IndexDisagrees as disagreement:
            LOGGER.warning("the audit index disagrees with the chain (%s): rebuilding it", disagreement)
            self.rebuild()
            found = self._read_back(filters, limit, newest_first)
        yield from found

    def _read_back(
        self, filters: dict[str, str], limit: int | None, newest_first: bool
    ) -> list[dict[str, Any]]:
        where, values = self._where(filters)
        sql = "SELECT seq, at, length FROM records" + where
        sql += " ORDER BY seq DESC" if newest_first else " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        found = []
        with (self.directory / RECORDS).open("rb") as chain:
            for seq, at, length in self.db.execute(sql, values).fetchall():
                chain.seek(at)
                line = chain.read(length)
                try:
                    record = json.loads(line)
                except ValueError:
                    raise IndexDisagrees(f"row {seq} points at no record") from None
                if record.get("seq") != seq or not any(matching([record], **filters)):
                    raise IndexDisagrees(f"row {seq} is not what the chain holds there")
                found.append(record)
        return found

    def count(self, filters: Mapping[str, str] | None = None) -> int:
        where, values = self._where(dict(filters or {}))
        return int(self.db.execute("SELECT COUNT(*) FROM records" + where, values).fetchone()[0])

    def check(self) -> int | None:
        """Compare every row with the chain; on the first disagreement (a row added, missing or edited),
        rebuild the index and return that record's number; None when every row agrees."""
        self.refresh()
        rows = self.db.execute(
            "SELECT seq, time, actor, action, dataset, workspace, at, length FROM records ORDER BY seq"
        )
        expected, disagreement = 1, None
        with (self.directory / RECORDS).open("rb") as chain:
            for seq, time, actor, action, dataset, workspace, at, length in rows:
                chain.seek(at)
                try:
                    record = json.loads(chain.read(length))
                    event = record["event"]
                    resources = event.get("resources") or {}
                    agrees = seq == expected == record["seq"] and (
                        time,
                        actor,
                        action,
                        dataset,
                        workspace,
                    ) == (
                        event["time"],
                        event["actor"]["name"],
                        event["action"],
                        resources.get("dataset"),
                        resources.get("workspace"),
                    )
                except (ValueError, KeyError, TypeError):
                    agrees = False
                if not agrees:
                    disagreement = min(seq, expected)
                    break
                expected += 1
        rows.close()
        if disagreement is not None:
            self.rebuild()
        return disagreement

    def _where(self, filters: Mapping[str, str]) -> tuple[str, list[str]]:
        unknown = set(filters) - set(FILTERS)
        if unknown:
            raise ValueError(f"unknown filters {sorted(unknown)}; known: {', '.join(FILTERS)}")
        actor, action, dataset, workspace, since, until = (filters.get(name, "") for name in FILTERS)
        self.refresh()
        clauses: list[str] = []
        values: list[str] = []
        for column, value in (("actor", actor), ("dataset", dataset), ("workspace", workspace)):
            if value:
                clauses.append(f"{column} = ?")
                values.append(value)
        if action:
            if action.endswith("."):
                clauses.append("action >= ? AND action < ?")
                values += [action, action[:-1] + "/"]  # '/' sorts right after '.'
            else:
                clauses.append("action = ?")
                values.append(action)
        if since:
            clauses.append("time >= ?")
            values.append(since)
        if until:
            clauses.append("time <= ?")
            values.append(until)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


def find(
    directory: str | Path,
    filters: Mapping[str, str] | None = None,
    *,
    limit: int | None = None,
    newest_first: bool = False,
) -> tuple[list[dict[str, Any]], int]:
    """The records matching `filters` (at most `limit`, oldest or newest first) and how many match in all:
    through the index when SQLite answers, else by filtering the chain."""
    filters = dict(filters or {})
    for attempt in ("index", "index rebuilt"):
        try:
            with closing(AuditIndex(directory)) as index:
                found = list(index.query(filters, limit=limit, newest_first=newest_first))
                return found, index.count(filters)  # after the query, which rebuilds a tampered index
        except sqlite3.Error as error:
            LOGGER.warning("the audit index cannot answer (%s: %s)", type(error).__name__, error)
            if attempt == "index" and set_aside(directory, error):
                continue
            break
    LOGGER.warning("answering from the chain itself, without the index")
    return _scan(directory, filters, limit=limit, newest_first=newest_first)


def set_aside(directory: str | Path, error: sqlite3.Error) -> bool:
    """Moves a damaged index file aside (kept for inspection) so the next query rebuilds it; True if it did.
    Only SQLite's "not a database" and "malformed" mean the file itself is damaged: an unwritable directory or
    a failing disk is left to the operator to repair."""
    damaged = isinstance(error, sqlite3.DatabaseError) and (
        "not a database" in str(error) or "malformed" in str(error)
    )
    path = Path(directory) / INDEX
    if not damaged or not path.is_file():
        return False
    try:
        path.replace(path.with_name(INDEX + ".damaged"))
    except OSError as cannot:
        LOGGER.warning("the damaged audit index cannot be set aside: %s", cannot)
        return False
    LOGGER.warning("the damaged audit index was set aside as %s.damaged; it is rebuilt now", INDEX)
    return True


def _scan(
    directory: str | Path, filters: dict[str, str], *, limit: int | None, newest_first: bool
) -> tuple[list[dict[str, Any]], int]:
    """Every matching record read from the chain line by line; keeps only the page asked for."""
    kept: deque[dict[str, Any]] = deque(maxlen=limit if newest_first else None)
    total = 0
    for record in matching((json.loads(line) for line in read_lines(directory) if line.strip()), **filters):
        total += 1
        if newest_first or limit is None or len(kept) < limit:
            kept.append(record)
    return (list(reversed(kept)) if newest_first else list(kept)), total


def _hash_at(chain: BinaryIO, at: int, length: int) -> str:
    chain.seek(at)
    try:
        return str(json.loads(chain.read(length)).get("hash", ""))
    except ValueError:
        return ""
