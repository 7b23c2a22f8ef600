"""A query index over the audit spool: SQLite beside the chain, brought up to date incrementally.

The chain file stays the record of truth (verification never reads the index); the index only answers
`cleanroom audit query` and the officers' page quickly. It remembers how far into records.jsonl it has read,
so a refresh reads only what was appended since. Deleting it is harmless: the next query rebuilds it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cleanroom.audit.spool import RECORDS

INDEX = "index.sqlite"
FILTERS = ("actor", "action", "dataset", "workspace", "since", "until")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
  seq INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  dataset TEXT, workspace TEXT, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS by_actor ON records (actor, seq);
CREATE INDEX IF NOT EXISTS by_action ON records (action, seq);
CREATE INDEX IF NOT EXISTS by_dataset ON records (dataset, seq);
CREATE INDEX IF NOT EXISTS by_workspace ON records (workspace, seq);
CREATE INDEX IF NOT EXISTS by_time ON records (time);
CREATE TABLE IF NOT EXISTS progress (id INTEGER PRIMARY KEY CHECK (id = 1), offset INTEGER NOT NULL);
"""


class AuditIndex:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.db = sqlite3.connect(self.directory / INDEX)
        self.db.executescript(_SCHEMA)

    def refresh(self) -> int:
        """Index what was appended since the last refresh; returns how many records that was."""
        path = self.directory / RECORDS
        if not path.exists():
            return 0
        row = self.db.execute("SELECT offset FROM progress WHERE id = 1").fetchone()
        offset = int(row[0]) if row else 0
        rows = []
        with path.open("rb") as records:
            records.seek(offset)
            for line in records:
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
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
                        line.decode().rstrip("\n"),
                    )
                )
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
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
        `spool.matching` defines them; action accepts a prefix ending in '.'."""
        where, values = self._where(filters or {})
        sql = "SELECT record FROM records" + where
        sql += " ORDER BY seq DESC" if newest_first else " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        for (record,) in self.db.execute(sql, values):
            yield json.loads(record)

    def count(self, filters: Mapping[str, str] | None = None) -> int:
        where, values = self._where(filters or {})
        return int(self.db.execute("SELECT COUNT(*) FROM records" + where, values).fetchone()[0])

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
