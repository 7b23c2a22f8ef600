"""The hash chain: each record carries its sequence number, the previous record's hash and its own hash,
so that any changed, removed, inserted or reordered record breaks the chain at a nameable place. Signed
checkpoints (JWS, EdDSA) pin the chain's head from time to time and each names the checkpoint before it, so
that even an attacker who recomputes every hash after a change is caught, and so is a dropped checkpoint.
Checkpoints verify only with keys the verifier trusts from its own configuration (`trust`); a key rotation is
a checkpoint signed by the key it replaces. Pure: no files, no clock.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "sha256:" + "0" * 64
CHECKPOINT_ALGORITHM = "EdDSA"


def canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(seq: int, prev: str, event: Mapping[str, Any], received: str | None = None) -> str:
    """The record's hash over {seq, prev, received, event}; `received` (the receiver's clock) is absent from
    records written before it was stamped."""
    document: dict[str, Any] = {"seq": seq, "prev": prev, "event": event}
    if received is not None:
        document["received"] = received
    return "sha256:" + hashlib.sha256(canonical(document)).hexdigest()


def link(seq: int, prev: str, event: Mapping[str, Any], received: str | None = None) -> dict[str, Any]:
    """The chain record for ``event`` at position ``seq`` after a record whose hash is ``prev``, received (by
    the log's own clock, beside the time the writer claims in the event) at ``received``."""
    record: dict[str, Any] = {"seq": seq, "prev": prev, "event": dict(event)}
    if received is not None:
        record["received"] = received
    record["hash"] = record_hash(seq, prev, event, received)
    return record


def token_digest(token: str) -> str:
    """What the next checkpoint names as its predecessor."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


CHECKPOINT_TYPE, RECEIPT_TYPE = "cleanroom-audit-checkpoint", "cleanroom-audit-receipt"


def sign_checkpoint(
    seq: int,
    head: str,
    time: str,
    private_key: Any,
    kid: str,
    previous: str = GENESIS,
    successor: Mapping[str, Any] | None = None,
) -> str:
    """A JWS over the chain head at ``seq`` that names the checkpoint before it (``previous``, its
    `token_digest`; GENESIS for the first), so checkpoints cannot be dropped or reordered unnoticed. ``kid``
    names the key. A rotation is a checkpoint signed by the key being replaced whose ``successor`` names the
    new key ({"fingerprint", "jwk"}); from then on only the successor signs."""
    claims: dict[str, Any] = {"seq": seq, "hash": head, "time": time, "prev": previous}
    if successor is not None:
        claims["next"] = dict(successor)
    return jwt.encode(
        claims, private_key, algorithm=CHECKPOINT_ALGORITHM, headers={"kid": kid, "typ": CHECKPOINT_TYPE}
    )


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """The full SHA-256 of the raw Ed25519 public key: what a verifier's configuration pins."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Problem:
    seq: int
    # changed | removed | inserted | reordered | truncated | bad-signature | untrusted-key | old-format |
    # checkpoint-removed | bad-receipt | stale
    kind: str
    detail: str


@dataclass(frozen=True)
class Report:
    """What a verification found: the first problem (None: everything holds), and the facts a cross-check
    needs (every record's hash, every key that was trusted along the way)."""

    records: int
    checkpoints: int
    sealed: int  # the last record a verified checkpoint covers
    newest: str  # the newest verified checkpoint's time ("" when none)
    problem: Problem | None
    heads: Mapping[int, str] = field(default_factory=dict, repr=False)
    keys: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def unsealed(self) -> int:
        """Records after the newest checkpoint: held by nothing but the chain itself until the next one."""
        return self.records - self.sealed


def verify(
    records: Sequence[Mapping[str, Any]],
    checkpoints: Iterable[str],
    public_keys: Mapping[str, Any],
) -> Problem | None:
    """The first problem in the chain, or None when every link and every checkpoint holds. ``public_keys``
    (by key id) are the keys the verifier trusts, from its own configuration (`trust`)."""
    links = (
        (
            int(record.get("seq", -1)),
            str(record.get("prev")),
            record.get("hash"),
            record_hash(
                int(record.get("seq", -1)),
                str(record.get("prev")),
                record.get("event") or {},
                record.get("received"),
            ),
        )
        for record in records
    )
    return check(links, checkpoints, public_keys).problem


_HASH, _PREV, _SEQ = b',"hash":"', b',"prev":"', b',"seq":'
_DIGEST = len("sha256:") + 64


def verify_lines(
    lines: Iterable[bytes], checkpoints: Iterable[str], public_keys: Mapping[str, Any]
) -> Problem | None:
    """`verify` over the records' stored lines, without parsing them (see `check_lines`)."""
    return check_lines(lines, checkpoints, public_keys).problem


def check_lines(
    lines: Iterable[bytes],
    checkpoints: Iterable[str],
    public_keys: Mapping[str, Any],
    keep: Container[int] | None = None,
) -> Report:
    """The chain's report over the stored lines. A stored record is canonical({event, hash, prev, received,
    seq}); the hashed document canonical({event, prev, received, seq}) is exactly that line without its
    `,"hash":"..."` member (keys sort as event, hash, prev, received, seq), so each link is one SHA-256 over
    bytes. A line in any other form does not hash to its stored value and is reported. ``keep``: see `check`."""
    return check((_link_of(line) for line in lines if line.strip()), checkpoints, public_keys, keep)


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


def check(
    links: Iterable[tuple[int, str, Any, str]],
    checkpoints: Iterable[str],
    public_keys: Mapping[str, Any],
    keep: Container[int] | None = None,
) -> Report:
    """The report over the links in order. ``keep`` names the records whose hashes the report's ``heads``
    must hold (those the checkpoints and receipts sign: `wanted_heads`); by default every record's, which
    grows with the trail, so a verifier that streams a long trail passes it and runs in constant memory."""
    prev, expected, previous_seq = GENESIS, 1, 0
    hashes: dict[int, str] = {0: GENESIS}
    for seq, linked, stored, computed in links:
        problem = None
        if seq > expected:
            problem = Problem(expected, "removed", f"records {expected} to {seq - 1} are missing")
        elif seq < expected:
            kind = "inserted" if seq == previous_seq else "reordered"
            problem = Problem(expected, kind, f"expected record {expected}, found record {seq} ({kind})")
        elif stored != computed:
            problem = Problem(seq, "changed", "the record's content does not match its hash")
        elif linked != prev:
            problem = Problem(
                seq - 1,
                "changed",
                f"record {seq} links to a different record {seq - 1}: it was replaced and re-hashed",
            )
        if problem is not None:
            return Report(expected - 1, 0, 0, "", problem, hashes, dict(public_keys))
        prev = str(stored)
        if keep is None or seq in keep:
            hashes[seq] = prev
        previous_seq = seq
        expected += 1
    return _check_checkpoints(expected - 1, hashes, checkpoints, public_keys)


def wanted_heads(*tokens: Iterable[str]) -> frozenset[int]:
    """The records that signed tokens (checkpoints, receipts) name, read without verifying them: the only
    hashes a verification must keep (`check`'s ``keep``). A token that cannot be read names none; its
    verification reports it."""
    seqs = set()
    for token in itertools.chain(*tokens):
        try:
            seqs.add(int(jwt.decode(token, options={"verify_signature": False})["seq"]))
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            continue
    return frozenset(seqs)


def _check_checkpoints(
    last: int, hashes: Mapping[int, str], checkpoints: Iterable[str], public_keys: Mapping[str, Any]
) -> Report:
    """Each checkpoint in order: signed by a key trusted at that point, chained to the one before it, over a
    record the chain holds with the hash it signed; a rotation hands trust to the key it names."""
    trusted = dict(public_keys)  # keys that may sign from here on
    ever = dict(public_keys)  # every key trusted at some point (receipts signed before a rotation stay good)
    previous, signed_before, count, newest = GENESIS, 0, 0, ""
    for token in checkpoints:
        verified = _verified_checkpoint(token, trusted, ever)
        if isinstance(verified, Problem):
            problem: Problem | None = verified
        else:
            kid, claims = verified
            problem = _misplaced(claims, previous, signed_before, last, hashes) or _rotate(
                claims, kid, trusted, ever
            )
        if problem is not None:
            return Report(last, count, signed_before, newest, problem, hashes, ever)
        previous = token_digest(token)
        signed_before, count, newest = int(claims["seq"]), count + 1, str(claims.get("time", ""))
    return Report(last, count, signed_before, newest, None, hashes, ever)


def _verified_checkpoint(
    token: str, trusted: Mapping[str, Any], ever: Mapping[str, Any]
) -> tuple[str, dict[str, Any]] | Problem:
    """The checkpoint's key id and claims, its signature verified with a key trusted now; or the problem."""
    try:
        header = jwt.get_unverified_header(token)
        kid = str(header.get("kid", ""))
        claimed = int(jwt.decode(token, options={"verify_signature": False}).get("seq", 0))
        key = trusted.get(kid)
        if key is None:
            why = (
                "was replaced by a rotation and may no longer sign"
                if kid in ever
                else "is not among the keys this verifier trusts (its configuration pins them by "
                "fingerprint; a rotation must be signed by the key it replaces)"
            )
            return Problem(
                claimed,
                "untrusted-key",
                f"the checkpoint at record {claimed} is signed by key {kid!r}, which {why}",
            )
        if header.get("typ") not in (None, "JWT", CHECKPOINT_TYPE):  # format 1 said JWT
            return Problem(claimed, "bad-signature", f"a {header.get('typ')} is not a checkpoint")
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=[CHECKPOINT_ALGORITHM])
    except (jwt.PyJWTError, ValueError) as error:
        return Problem(0, "bad-signature", f"a checkpoint's signature does not verify: {error}")
    return kid, claims


def _misplaced(
    claims: Mapping[str, Any], previous: str, signed_before: int, last: int, hashes: Mapping[int, str]
) -> Problem | None:
    """Whether a verified checkpoint is out of place: not chained to the one before it, behind it, past the
    chain's end, or over a record that no longer has the hash it signed."""
    seq, head = int(claims["seq"]), str(claims["hash"])
    if "prev" not in claims:
        return Problem(
            seq,
            "old-format",
            f"the checkpoint at record {seq} does not name the checkpoint before it: this trail was "
            "written before checkpoints were chained (format 1), so its checkpoints can be dropped "
            "unnoticed and it cannot be verified; start a new trail and keep this one as an archive",
        )
    if claims["prev"] != previous:
        return Problem(
            seq,
            "checkpoint-removed",
            f"the checkpoint at record {seq} names a predecessor that is not the checkpoint stored "
            "before it: checkpoints were removed, reordered or replaced",
        )
    if seq < signed_before:
        return Problem(
            seq, "reordered", f"the checkpoint at record {seq} follows one at record {signed_before}"
        )
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
    return None


def _rotate(
    claims: Mapping[str, Any], kid: str, trusted: dict[str, Any], ever: dict[str, Any]
) -> Problem | None:
    """A checkpoint that names its successor key (``next``) hands trust to it: the signing key may sign no
    more. The successor must be an Ed25519 key matching the fingerprint the checkpoint signed."""
    successor = claims.get("next")
    if successor is None:
        return None
    seq = int(claims["seq"])
    try:
        new_key = jwt.algorithms.OKPAlgorithm.from_jwk(successor["jwk"])
    except (KeyError, TypeError, ValueError, jwt.PyJWTError) as error:
        return Problem(seq, "bad-signature", f"the rotation at record {seq} names no key: {error}")
    if not isinstance(new_key, Ed25519PublicKey) or fingerprint(new_key) != successor.get("fingerprint"):
        return Problem(
            seq, "bad-signature", f"the rotation at record {seq} names a key that is not its fingerprint"
        )
    del trusted[kid]
    trusted[key_id(new_key)] = ever[key_id(new_key)] = new_key
    return None


def key_id(public_key: Ed25519PublicKey) -> str:
    """The short name a JWS header carries (`kid`); trust rests on the full `fingerprint`."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]
