"""The durable local audit log: an append-only JSON-lines chain with signed checkpoints.

Writers in several processes append under an exclusive file lock and fsync before they return, so an
acknowledged event survives a crash, every writer sees one order, and a retried event (same id) is stored
once. Layout of the directory: records.jsonl (the chain), checkpoints.jsonl (one JWS a line, each naming the
one before), keys.json (the public keys' material, by key id: a verifier uses one only when its own
configuration trusts its fingerprint, see `trust`).

The log stamps each record with its own receive time beside the time the writer claims, signs a checkpoint
every `checkpoint_every` records and whenever `checkpoint()` is called (the service calls it every minute,
idle or not, so a verifier can require a recent one), and signs receipts for writers (`receipts`). A new
signing key on an existing trail must be introduced by the key it replaces (`previous_key`).
"""

from __future__ import annotations

import fcntl
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

from cleanroom.audit.chain import (
    GENESIS,
    Report,
    canonical,
    fingerprint,
    key_id,
    link,
    sign_checkpoint,
    token_digest,
)
from cleanroom.audit.events import AuditEvent
from cleanroom.audit.receipts import sign_receipt
from cleanroom.audit.trust import Anchors, keys_json
from cleanroom.audit.verification import verify_trail

RECORDS = "records.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
KEYS = "keys.json"


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
    """The keys recorded in an audit directory or export, by key id. Not a trust anchor: whoever rewrites
    the directory rewrites this file too (a verifier pins fingerprints, `trust`)."""
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
        previous_key: Ed25519PrivateKey | None = None,
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
        self._checkpoint_offset = 0
        self._previous_checkpoint = GENESIS
        self._signer_kid = ""  # the key the trail's newest checkpoint hands on to ("" before the first)
        with self._locked(), (self.directory / RECORDS).open("a+b") as records:
            self._catch_up(records)
            self._catch_up_checkpoints()
            if self._signer_kid and self._signer_kid != self.kid:
                self._rotate(previous_key)
            self._publish_key()

    def _publish_key(self) -> None:
        keys = json.loads((self.directory / KEYS).read_text()) if (self.directory / KEYS).exists() else {}
        if self.kid not in keys:
            keys[self.kid] = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.signing_key.public_key()))
            write_durably(self.directory / KEYS, json.dumps(keys, indent=1).encode())

    def _rotate(self, previous_key: Ed25519PrivateKey | None) -> None:
        """Hand signing on to this log's key with a checkpoint signed by the key it replaces."""
        if previous_key is None or key_id(previous_key.public_key()) != self._signer_kid:
            raise ValueError(
                f"{self.directory}: the trail is signed by key {self._signer_kid}, not by this signing key "
                f"({self.kid}); a new key must be introduced by the key it replaces: `cleanroom audit "
                "rotate-key --old OLD.pem --new NEW.pem`"
            )
        public = self.signing_key.public_key()
        successor = {
            "fingerprint": fingerprint(public),
            "jwk": json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public)),
        }
        self._sign(*self._head, key=previous_key, successor=successor)

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

    def _catch_up_checkpoints(self) -> None:
        """The newest checkpoint (another writer may have signed one): the next names it, and its signer (or
        the successor it names) is the key that signs next."""
        path = self.directory / CHECKPOINTS
        if not path.exists():
            return
        with path.open("rb") as checkpoints:
            checkpoints.seek(self._checkpoint_offset)
            for raw in checkpoints:
                token = raw.strip().decode()
                if not token:
                    continue
                self._previous_checkpoint = token_digest(token)
                claims = jwt.decode(token, options={"verify_signature": False})
                successor = claims.get("next")
                successor_key = jwt.algorithms.OKPAlgorithm.from_jwk(successor["jwk"]) if successor else None
                self._signer_kid = (
                    key_id(successor_key)
                    if isinstance(successor_key, Ed25519PublicKey)
                    else str(jwt.get_unverified_header(token).get("kid", ""))
                )
            self._checkpoint_offset = checkpoints.tell()

    @property
    def head(self) -> tuple[int, str]:
        """The sequence number and hash of the newest record this log has seen."""
        return self._head

    def receipt(self, writer: str) -> str:
        """A signed receipt over the current head for ``writer``, after its batch was appended."""
        seq, head = self._head
        return sign_receipt(seq, head, _now(), writer, self.signing_key, self.kid)

    def append(self, events: Sequence[AuditEvent]) -> list[int]:
        """Append events durably (fsync before returning); returns their sequence numbers. An event whose id
        is already in the log is not stored again (its first sequence number is not looked up: -1)."""
        sequences: list[int] = []
        with self._locked(), (self.directory / RECORDS).open("a+b") as records:
            self._catch_up(records)
            lines = []
            boundaries: list[tuple[int, str]] = []
            seq, head = self._head
            received = _now()
            for event in events:
                if event.id in self._ids:
                    sequences.append(-1)
                    continue
                seq += 1
                record = link(seq, head, event.to_json(), received)
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
        """Sign the current head now, even when nothing was appended since the last one: a fresh checkpoint
        says the trail still ended here at this time (also done every ``checkpoint_every`` records, and
        after ``checkpoint_seconds`` when events arrive)."""
        with self._locked(), (self.directory / RECORDS).open("a+b") as records:
            self._catch_up(records)
            self._checkpoint()

    def _checkpoint(self) -> None:
        self._sign(*self._head)

    def _sign(
        self,
        seq: int,
        head: str,
        *,
        key: Ed25519PrivateKey | None = None,
        successor: dict[str, Any] | None = None,
    ) -> None:
        self._catch_up_checkpoints()
        signer = key or self.signing_key
        token = sign_checkpoint(
            seq,
            head,
            datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            signer,
            key_id(signer.public_key()),
            previous=self._previous_checkpoint,
            successor=successor,
        )
        with (self.directory / CHECKPOINTS).open("ab") as checkpoints:
            checkpoints.write(token.encode() + b"\n")
            checkpoints.flush()
            os.fsync(checkpoints.fileno())
        self._catch_up_checkpoints()
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


def read_lines(directory: str | Path) -> Iterator[bytes]:
    """The trail's stored lines, read as they are verified: a trail of any length in constant memory."""
    path = Path(directory) / RECORDS
    if not path.exists():
        return
    with path.open("rb") as records:
        yield from records


def verify_directory(
    directory: str | Path,
    anchors: Anchors,
    *,
    receipts: Iterable[str] = (),
    max_age_seconds: float | None = None,
) -> Report:
    """Verify a trail on its stored bytes (`verification.verify_trail`) under the caller's trusted keys."""
    return verify_trail(
        read_lines(directory),
        read_checkpoints(directory),
        keys_json(directory),
        anchors,
        receipts=receipts,
        max_age_seconds=max_age_seconds,
    )


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
