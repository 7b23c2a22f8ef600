"""Receipts: the audit service's signed acknowledgement to a writer, kept by the writer, checked against the
trail by the verifier.

A receipt says "after your batch, the chain's record `seq` had hash `hash`; I received it at `received`". The
hash commits to every record up to `seq`, so a trail later rewritten, shortened or re-signed at or before
`seq` no longer matches a receipt some writer holds. The service signs receipts with its checkpoint key, so a
receipt verifies against the same trusted keys as the checkpoints; one signed by any other key is forged.
Pure: no files, no clock."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jwt

from cleanroom.audit.chain import CHECKPOINT_ALGORITHM, RECEIPT_TYPE, Problem, Report


def sign_receipt(seq: int, head: str, received: str, writer: str, private_key: Any, kid: str) -> str:
    return jwt.encode(
        {"seq": seq, "hash": head, "received": received, "writer": writer},
        private_key,
        algorithm=CHECKPOINT_ALGORITHM,
        headers={"kid": kid, "typ": RECEIPT_TYPE},
    )


def check_receipts(report: Report, receipts: Iterable[str]) -> Problem | None:
    """The first receipt that the trail (as `report` found it) contradicts, or that is not the service's."""
    for token in receipts:
        try:
            header = jwt.get_unverified_header(token)
            key = report.keys.get(str(header.get("kid", "")))
            if key is None:
                return Problem(
                    0,
                    "bad-receipt",
                    f"a receipt is signed by key {header.get('kid')!r}, which is not a trusted key of this "
                    "trail: the service did not issue it",
                )
            if header.get("typ") != RECEIPT_TYPE:
                return Problem(0, "bad-receipt", "a token among the receipts is not a receipt")
            claims = jwt.decode(token, key, algorithms=[CHECKPOINT_ALGORITHM])
        except (jwt.PyJWTError, ValueError) as error:
            return Problem(0, "bad-receipt", f"a receipt's signature does not verify: {error}")
        seq, head = int(claims["seq"]), str(claims["hash"])
        told = f"the service told {claims.get('writer', '?')} at {claims.get('received', '?')}"
        if seq > report.records:
            return Problem(
                report.records + 1,
                "truncated",
                f"{told} that the chain held record {seq}, but it ends at {report.records}",
            )
        if report.heads.get(seq) != head:
            return Problem(
                seq,
                "changed",
                f"{told} that record {seq} had hash {head}; the trail has another: rewritten at or before "
                f"record {seq}",
            )
    return None
