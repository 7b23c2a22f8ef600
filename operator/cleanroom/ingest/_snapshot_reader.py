"""Another Dataset's published snapshot as an ingest's source (the CHAIMELEON two-step: pseudonymize at the
site, then derive).

It is a `sources.SourceReader` over the snapshot store, so it lives in the ingest, the one core that joins
`sources` and `snapshots`; neither of those imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cleanroom.snapshots import S3Location, SnapshotStore
from cleanroom.sources import DEFAULT_MAX_FILE_BYTES, Skipped, SourceError, TooLarge


@dataclass(frozen=True)
class SnapshotReader:
    """Another Dataset's published snapshot (the CHAIMELEON two-step: pseudonymize at the site, then derive)."""

    store: S3Location
    dataset: str
    snapshot: str

    def _manifest(self) -> dict[str, Any]:
        return SnapshotStore(self.store).manifest(self.dataset, self.snapshot)

    def items(self) -> list[str]:
        return [f"{entry['digest']} {entry['path']}" for entry in self._manifest()["files"]]

    def skipped(self) -> list[Skipped]:
        return []

    def read(self, item: str, limit: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
        digest = item.split(" ", 1)[0]
        data = SnapshotStore(self.store).get_object(digest)
        if data is None:
            raise SourceError(f"object {digest} of snapshot {self.snapshot} is missing")
        if len(data) > limit:
            raise TooLarge(item, len(data), limit)
        return data

    def describe(self) -> dict[str, str]:
        return {"kind": "dataset", "location": f"dataset/{self.dataset}@{self.snapshot}"}
