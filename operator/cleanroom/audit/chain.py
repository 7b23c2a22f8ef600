"""The hash chain: each record carries its sequence number, the previous record's hash and its own hash,
so that any changed, removed, inserted or reordered record breaks the chain at a nameable place. Signed
checkpoints (JWS, EdDSA) pin the chain's head from time to time, so that even an attacker who recomputes
every hash after a change is caught, and so is truncation. Pure: no files, no clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

GENESIS = "sha256:" + "0" * 64
CHECKPOINT_ALGORITHM = "EdDSA"


def canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(seq: int, prev: str, event: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical({"seq": seq, "prev": prev, "event": event})).hexdigest()


def link(seq: int, prev: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """The chain record for ``event`` at position ``seq`` after a record whose hash is ``prev``."""
    return {"seq": seq, "prev": prev, "hash": record_hash(seq, prev, event), "event": dict(event)}


def sign_checkpoint(seq: int, head: str, time: str, private_key: Any, kid: str) -> str:
    """A JWS over the chain head at ``seq``; ``kid`` names the key so keys can rotate."""
    return jwt.encode(
        {"seq": seq, "hash": head, "time": time},
        private_key,
        algorithm=CHECKPOINT_ALGORITHM,
        headers={"kid": kid},
    )


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: str  # changed | removed | inserted | reordered | truncated | bad-signature
    detail: str


def verify(
    records: Sequence[Mapping[str, Any]],
    checkpoints: Iterable[str],
    public_keys: Mapping[str, Any],
) -> Problem | None:
    """The first problem in the chain, or None when every link and every checkpoint signature holds."""
    prev, expected = GENESIS, 1
    hashes: dict[int, str] = {}
    for index, record in enumerate(records):
        seq = int(record.get("seq", -1))
        if seq > expected:
            return Problem(expected, "removed", f"records {expected} to {seq - 1} are missing")
        if seq < expected:
            previous_seq = int(records[index - 1].get("seq", -1)) if index else 0
            kind = "inserted" if seq == previous_seq else "reordered"
            return Problem(expected, kind, f"expected record {expected}, found record {seq} ({kind})")
        if record.get("hash") != record_hash(seq, str(record.get("prev")), record.get("event") or {}):
            return Problem(seq, "changed", "the record's content does not match its hash")
        if record.get("prev") != prev:
            return Problem(
                seq - 1,
                "changed",
                f"record {seq} links to a different record {seq - 1}: it was replaced and re-hashed",
            )
        hashes[seq] = prev = str(record["hash"])
        expected += 1
    last = expected - 1
    signed_before = 0
    for token in checkpoints:
        try:
            kid = jwt.get_unverified_header(token).get("kid", "")
            key = public_keys.get(kid)
            claimed = int(jwt.decode(token, options={"verify_signature": False}).get("seq", 0))
            if key is None:
                return Problem(
                    claimed,
                    "bad-signature",
                    f"the checkpoint at record {claimed} is signed with unknown key {kid!r}",
                )
            claims = jwt.decode(token, key, algorithms=[CHECKPOINT_ALGORITHM])
        except jwt.PyJWTError as error:
            return Problem(0, "bad-signature", f"a checkpoint's signature does not verify: {error}")
        seq, head = int(claims["seq"]), str(claims["hash"])
        if seq > last:
            return Problem(
                last + 1, "truncated", f"a signed checkpoint covers record {seq} but the chain ends at {last}"
            )
        if hashes.get(seq) != head:
            return Problem(
                seq,
                "changed",
                f"record {seq} differs from its signed checkpoint: the chain was rewritten after record "
                f"{signed_before} (the last checkpoint that holds) and at or before record {seq}",
            )
        signed_before = max(signed_before, seq)
    return None
