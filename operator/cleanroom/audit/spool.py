"""The durable local audit log: an append-only JSON-lines chain with signed checkpoints.

Writers in several processes append under an exclusive file lock and fsync before they return, so an
acknowledged event survives a crash, every writer sees one order, and a retried event (same id) is stored
once. Layout of the directory: records.jsonl (the chain), checkpoints.jsonl (one JWS a line), keys.json
(the public keys that verify the checkpoints, by key id).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cleanroom.audit.chain import GENESIS, Problem, canonical, link, sign_checkpoint, verify_lines
from cleanroom.audit.events import AuditEvent

RECORDS = "records.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
KEYS = "keys.json"


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: the audit signing key must be an Ed25519 private key (PEM)")
    return key


def write_signing_key(path: str | Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    Path(path).write_bytes(pem)
    os.chmod(path, 0o600)
    return key


def public_keys(directory: str | Path) -> dict[str, Any]:
    """The checkpoint-verifying keys recorded in an audit directory or export, by key id."""
    path = Path(directory) / KEYS
    if not path.exists():
        return {}
    return {
        kid: jwt.algorithms.OKPAlgorithm.from_jwk(jwk) for kid, jwk in json.loads(path.read_text()).items()
    }


class AuditLog:
    def __init__(
        self,
        directory: str | Path,
        signing_key: Ed25519PrivateKey,
        *,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 60.0,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.signing_key = signing_key
        self.kid = key_id(signing_key.public_key())
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self._offset = 0
        self._head = (0, GENESIS)
        self._ids: set[str] = set()
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._publish_key()

    def _publish_key(self) -> None:
        with self._locked():
            keys = json.loads((self.directory / KEYS).read_text()) if (self.directory / KEYS).exists() else {}
            if self.kid not in keys:
                keys[self.kid] = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.signing_key.public_key()))
                write_durably(self.directory / KEYS, json.dumps(keys, indent=1).encode())

    def _locked(self) -> _Lock:
        return _Lock(self.directory / ".lock")

    def _catch_up(self, records: Any) -> None:
        """Read what other writers appended since this one last looked: the head moves, ids are learned."""
        records.seek(self._offset)
        for line in records:
            if line.strip():
                record = json.loads(line)
                self._head = (int(record["seq"]), str(record["hash"]))
                self._ids.add(str(record["event"]["id"]))
                self._since_checkpoint += 1
        self._offset = records.tell()

    def append(self, events: Sequence[AuditEvent]) -> list[int]:
        """Append events durably (fsync before returning); returns their sequence numbers. An event whose id
        is already in the log is not stored again (its first sequence number is not looked up: -1)."""
        sequences: list[int] = []
        with self._locked(), (self.directory / RECORDS).open("a+b") as records:
            self._catch_up(records)
            lines = []
            boundaries: list[tuple[int, str]] = []
            seq, head = self._head
            for event in events:
                if event.id in self._ids:
                    sequences.append(-1)
                    continue
                seq += 1
                record = link(seq, head, event.to_json())
                head = record["hash"]
                lines.append(canonical(record) + b"\n")
                self._ids.add(event.id)
                sequences.append(seq)
                if seq % self.checkpoint_every == 0:
                    boundaries.append((seq, head))
            if lines:
                records.seek(0, os.SEEK_END)
                records.write(b"".join(lines))
                records.flush()
                os.fsync(records.fileno())
                self._offset = records.tell()
                self._head = (seq, head)
                self._since_checkpoint += len(lines)
            # Every checkpoint_every-th record is signed exactly, so a rewrite is located to that stretch.
            for boundary in boundaries:
                self._sign(*boundary)
            if self._since_checkpoint and time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
                self._checkpoint()
        return sequences

    def checkpoint(self) -> None:
        """Sign the current head now (also done every ``checkpoint_every`` records or ``checkpoint_seconds``)."""
        with self._locked(), (self.directory / RECORDS).open("a+b") as records:
            self._catch_up(records)
            self._checkpoint()

    def _checkpoint(self) -> None:
        seq, head = self._head
        if seq:
            self._sign(seq, head)

    def _sign(self, seq: int, head: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        token = sign_checkpoint(seq, head, now, self.signing_key, self.kid)
        with (self.directory / CHECKPOINTS).open("ab") as checkpoints:
            checkpoints.write(token.encode() + b"\n")
            checkpoints.flush()
            os.fsync(checkpoints.fileno())
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()


class _Lock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _Lock:
        self.handle = self.path.open("a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def read_records(directory: str | Path) -> list[dict[str, Any]]:
    path = Path(directory) / RECORDS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_lines(directory: str | Path) -> list[bytes]:
    path = Path(directory) / RECORDS
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def verify_directory(directory: str | Path) -> tuple[int, Problem | None]:
    """How many records a trail holds and its first problem (None: every link and signature holds), checked
    on the stored bytes (`chain.verify_lines`)."""
    lines = read_lines(directory)
    problem = verify_lines(lines, read_checkpoints(directory), public_keys(directory))
    return sum(1 for line in lines if line.strip()), problem


def read_checkpoints(directory: str | Path) -> list[str]:
    path = Path(directory) / CHECKPOINTS
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def follow(directory: str | Path, poll: float = 0.5) -> Iterator[dict[str, Any]]:
    """Records as they are appended (``cleanroom audit tail -f``)."""
    path = Path(directory) / RECORDS
    offset = 0
    while True:
        if path.exists():
            with path.open("rb") as records:
                records.seek(offset)
                for line in records:
                    if line.endswith(b"\n"):
                        offset += len(line)
                        yield json.loads(line)
        time.sleep(poll)


def export(directory: str | Path, target: str | Path) -> int:
    """Copy the chain, the checkpoints and the public keys to ``target`` for offline verification."""
    source, out = Path(directory), Path(target)
    out.mkdir(parents=True, exist_ok=True)
    for name in (RECORDS, CHECKPOINTS, KEYS):
        if (source / name).exists():
            write_durably(out / name, (source / name).read_bytes())
    return len(read_records(out))


def matching(
    records: Iterable[dict[str, Any]],
    *,
    actor: str = "",
    action: str = "",
    dataset: str = "",
    workspace: str = "",
    since: str = "",
    until: str = "",
) -> Iterator[dict[str, Any]]:
    """Records whose event matches every given filter (action accepts a prefix, e.g. 'workspace.')."""
    for record in records:
        event = record["event"]
        resources = event.get("resources") or {}
        if actor and event["actor"]["name"] != actor:
            continue
        if action and not (
            event["action"] == action or (action.endswith(".") and event["action"].startswith(action))
        ):
            continue
        if dataset and resources.get("dataset") != dataset:
            continue
        if workspace and resources.get("workspace") != workspace:
            continue
        if since and event["time"] < since:
            continue
        if until and event["time"] > until:
            continue
        yield record
