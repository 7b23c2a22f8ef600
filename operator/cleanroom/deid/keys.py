"""Keyed, repeatable derivations: pseudonyms, UIDs and per-patient date offsets.

Everything derives from one secret key with HMAC-SHA-512/256, each use under its own label so that a
pseudonym never equals a UID digest. Under Pseudonymize the key is the site's (the same patient always
gets the same pseudonym, so later ingests link up); under Anonymize it is random per run and discarded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

MIN_KEY_BYTES = 32
# Every patient pseudonym starts so (then 20 base-32 characters), whichever key made it.
PSEUDONYM_PREFIX = "PSN-"
# PS3.5 B.2: a UID derived from a UUID-sized integer under the 2.25 root; 2.25. plus at most 39 digits
# stays well under the 64-character limit.
UUID_ROOT = "2.25."
DATE_SHIFT_MAX_DAYS = 3650


class KeyError_(ValueError):
    """A key that cannot be used (too short, empty)."""


def key_from_bytes(value: bytes) -> bytes:
    """A site key as stored in a Secret or a key file: base64 of at least 32 bytes (as `make dev` writes it),
    or the raw bytes themselves."""
    text = value.strip()
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text
    return decoded if len(decoded) >= MIN_KEY_BYTES else text


def _digest(key: bytes, label: str, value: str) -> bytes:
    return hmac.new(key, f"{label}\x00{value}".encode(), "sha512_256").digest()


@dataclass(frozen=True)
class Keyring:
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise KeyError_(
                f"the pseudonymization key has {len(self.key)} bytes; use at least {MIN_KEY_BYTES} random bytes "
                "(e.g. `head -c 32 /dev/urandom | base64`)"
            )

    @classmethod
    def random(cls) -> Keyring:
        """A throw-away key for Anonymize: consistent within one run, irreversible after it."""
        return cls(secrets.token_bytes(MIN_KEY_BYTES))

    @property
    def key_id(self) -> str:
        """A fingerprint that identifies the key without revealing it (recorded in manifests)."""
        return "hmac-sha512-256:" + hashlib.sha256(b"cleanroom key id\x00" + self.key).hexdigest()[:16]

    def pseudonym(self, patient_id: str) -> str:
        """A stable patient pseudonym: 'PSN-' and 20 base-32 characters (100 bits)."""
        raw = _digest(self.key, "patient", patient_id)
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        number = int.from_bytes(raw[:13], "big")
        chars = []
        for _ in range(20):
            number, digit = divmod(number, 32)
            chars.append(alphabet[digit])
        return PSEUDONYM_PREFIX + "".join(chars)

    def uid(self, original: str) -> str:
        """The replacement UID for ``original``: the same everywhere it is referenced."""
        return UUID_ROOT + str(int.from_bytes(_digest(self.key, "uid", original.strip())[:16], "big"))

    def date_offset_days(self, patient_id: str) -> int:
        """How many days this patient's dates move back (1 to 3650), the same for all their studies."""
        raw = _digest(self.key, "date-shift", patient_id)
        return 1 + int.from_bytes(raw[:4], "big") % DATE_SHIFT_MAX_DAYS
