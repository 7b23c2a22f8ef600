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
    links = (
        (
            int(record.get("seq", -1)),
            str(record.get("prev")),
            record.get("hash"),
            record_hash(int(record.get("seq", -1)), str(record.get("prev")), record.get("event") or {}),
        )
        for record in records
    )
    return _verify(links, checkpoints, public_keys)


_HASH, _PREV, _SEQ = b',"hash":"', b',"prev":"', b',"seq":'
_DIGEST = len("sha256:") + 64


def verify_lines(
    lines: Iterable[bytes], checkpoints: Iterable[str], public_keys: Mapping[str, Any]
) -> Problem | None:
    """`verify` over the records' stored lines, without parsing them. A stored record is
    canonical({event, hash, prev, seq}); the hashed document canonical({event, prev, seq}) is exactly that
    line without its `,"hash":"..."` member (keys sort as event, hash, prev, seq), so each link is one
    SHA-256 over bytes. A line in any other form does not hash to its stored value and is reported."""
    return _verify((_link_of(line) for line in lines if line.strip()), checkpoints, public_keys)


def _link_of(line: bytes) -> tuple[int, str, str | None, str]:
    line = line.rstrip(b"\n")
    at_hash, at_prev, at_seq = line.rfind(_HASH), line.rfind(_PREV), line.rfind(_SEQ)
    if not 0 < at_hash < at_prev < at_seq or not line.endswith(b"}"):
        seq = int(json.loads(line).get("seq", -1)) if line.startswith(b"{") else -1
        return seq, "", None, "unparseable"
    stored = line[at_hash + len(_HASH) : at_hash + len(_HASH) + _DIGEST].decode()
    prev = line[at_prev + len(_PREV) : at_prev + len(_PREV) + _DIGEST].decode()
    seq = int(line[at_seq + len(_SEQ) : -1])
    hashed = line[:at_hash] + line[at_hash + len(_HASH) + _DIGEST + 1 :]
    return seq, prev, stored, "sha256:" + hashlib.sha256(hashed).hexdigest()


def _verify(
    links: Iterable[tuple[int, str, Any, str]], checkpoints: Iterable[str], public_keys: Mapping[str, Any]
) -> Problem | None:
    prev, expected, previous_seq = GENESIS, 1, 0
    hashes: dict[int, str] = {}
    for seq, linked, stored, computed in links:
        if seq > expected:
            return Problem(expected, "removed", f"records {expected} to {seq - 1} are missing")
        if seq < expected:
            kind = "inserted" if seq == previous_seq else "reordered"
            return Problem(expected, kind, f"expected record {expected}, found record {seq} ({kind})")
        if stored != computed:
            return Problem(seq, "changed", "the record's content does not match its hash")
        if linked != prev:
            return Problem(
                seq - 1,
                "changed",
                f"record {seq} links to a different record {seq - 1}: it was replaced and re-hashed",
            )
        hashes[seq] = prev = str(stored)
        previous_seq = seq
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
