"""The audit trail: event model, hash chain, signed and chained checkpoints, trust anchors, receipts, the
durable log, query and verification."""

from cleanroom.audit.chain import (
    GENESIS,
    Problem,
    Report,
    fingerprint,
    key_id,
    link,
    record_hash,
    sign_checkpoint,
    verify,
)
from cleanroom.audit.events import ACTIONS, SCHEMA, Actor, AuditEvent, InvalidEvent, event_from_json
from cleanroom.audit.receipts import check_receipts, sign_receipt
from cleanroom.audit.spool import (
    AuditLog,
    export,
    follow,
    load_signing_key,
    matching,
    public_keys,
    read_checkpoints,
    read_records,
    verify_directory,
    write_signing_key,
)
from cleanroom.audit.trust import Anchors, NoTrustAnchor, key_fingerprint, write_trusted_keys
from cleanroom.audit.verification import verify_trail

__all__ = [
    "ACTIONS",
    "GENESIS",
    "SCHEMA",
    "Actor",
    "Anchors",
    "AuditEvent",
    "AuditLog",
    "InvalidEvent",
    "NoTrustAnchor",
    "Problem",
    "Report",
    "check_receipts",
    "event_from_json",
    "export",
    "fingerprint",
    "follow",
    "key_fingerprint",
    "key_id",
    "link",
    "load_signing_key",
    "matching",
    "public_keys",
    "read_checkpoints",
    "read_records",
    "record_hash",
    "sign_checkpoint",
    "sign_receipt",
    "verify",
    "verify_directory",
    "verify_trail",
    "write_signing_key",
    "write_trusted_keys",
]
