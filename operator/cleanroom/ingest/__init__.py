"""The ingest pipeline: source -> de-identification in worker processes -> snapshot store."""

from cleanroom.ingest.pipeline import (
    DirectorySink,
    IngestResult,
    QuarantineEntry,
    StoreSink,
    process_item,
    publish,
    run,
)

__all__ = ["DirectorySink", "IngestResult", "QuarantineEntry", "StoreSink", "process_item", "publish", "run"]
