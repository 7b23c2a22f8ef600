"""The audit trail: event model, hash chain, signed checkpoints, the durable log, query and verification."""

from cleanroom.audit.chain import GENESIS, Problem, link, record_hash, sign_checkpoint, verify
from cleanroom.audit.events import ACTIONS, SCHEMA, Actor, AuditEvent, InvalidEvent, event_from_json
from cleanroom.audit.spool import (
    AuditLog,
    export,
    follow,
    key_id,
    load_signing_key,
    matching,
    public_keys,
    read_checkpoints,
    read_records,
    write_signing_key,
)

__all__ = [
    "ACTIONS",
    "GENESIS",
    "SCHEMA",
    "Actor",
    "AuditEvent",
    "AuditLog",
    "InvalidEvent",
    "Problem",
    "event_from_json",
    "export",
    "follow",
    "key_id",
    "link",
    "load_signing_key",
    "matching",
    "public_keys",
    "read_checkpoints",
    "read_records",
    "record_hash",
    "sign_checkpoint",
    "verify",
    "write_signing_key",
]
