"""The ingest pipeline: source -> de-identification in worker processes -> snapshot store."""

from cleanroom.ingest._snapshot_reader import SnapshotReader
from cleanroom.ingest.pipeline import (
    DirectorySink,
    IngestResult,
    Limits,
    QuarantineEntry,
    StoreSink,
    process_item,
    publish,
    run,
)
from cleanroom.ingest.reasons import NOT_ATTEMPTED, SOURCE_UNREACHABLE, STORAGE_UNAVAILABLE, WORKER_DIED

__all__ = [
    "NOT_ATTEMPTED",
    "SOURCE_UNREACHABLE",
    "STORAGE_UNAVAILABLE",
    "WORKER_DIED",
    "DirectorySink",
    "IngestResult",
    "Limits",
    "QuarantineEntry",
    "SnapshotReader",
    "StoreSink",
    "process_item",
    "publish",
    "run",
]
