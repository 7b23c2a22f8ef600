"""The airlock: results leave a Workspace only through an ExportRequest that passed the automated
disclosure checks (`checks`) and two people's approval (`approval`). Pure cores; the operator's handler
(`handlers.export`) and the copy Job (`copy`) do the I/O."""

from cleanroom.airlock.checks import (
    CHECKS,
    CheckResult,
    ExportedFile,
    Finding,
    passed,
    run_checks,
)
from cleanroom.airlock.fingerprints import (
    SnapshotFingerprints,
    fingerprint_snapshot,
    fingerprints_from_json,
)

__all__ = [
    "CHECKS",
    "CheckResult",
    "ExportedFile",
    "Finding",
    "SnapshotFingerprints",
    "fingerprint_snapshot",
    "fingerprints_from_json",
    "passed",
    "run_checks",
]
