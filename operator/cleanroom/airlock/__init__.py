"""The airlock: results leave a Workspace only through an ExportRequest that passed the automated
disclosure checks (`checks`) and two people's approval (`approval`). Pure cores; the operator's handler
(`handlers.export`), the copy Job (`copy`) and the check Job (`checker`, whose result the operator judges
with `check_result`) do the I/O. The operator parses no file a modeller wrote: only the check Job does."""

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
