"""Where a verifier's trust comes from: key fingerprints in its own configuration, never the trail it checks.

An audit directory carries its public keys (keys.json) so that an export verifies with no cluster, but
whoever can rewrite the directory can replace that file too. So a verifier takes the fingerprints it trusts
from a flag, a file, CLEANROOM_AUDIT_TRUSTED_KEYS (a file: the chart mounts a ConfigMap that writers cannot
change) or, on a laptop, .cluster/audit-trusted-keys (written by the dev stack beside the signing key), and
uses a key from keys.json only when its fingerprint is one of those. Keys introduced later by a rotation are
trusted because the key they replace signed them (`chain`)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cleanroom.audit.chain import fingerprint, key_id

ENV = "CLEANROOM_AUDIT_TRUSTED_KEYS"
DEFAULT_FILE = Path(".cluster/audit-trusted-keys")
_FINGERPRINT = re.compile(r"^ed25519:[0-9a-f]{64}$")


class NoTrustAnchor(ValueError):
    """The verifier has no trusted keys of its own, or was pointed at the trail's; the message says what to set."""


@dataclass(frozen=True)
class Anchors:
    fingerprints: frozenset[str]
    source: str  # where they came from, for the report


def parse_fingerprints(text: str, source: str) -> frozenset[str]:
    """One fingerprint a line (`cleanroom audit fingerprint KEY.pem` prints one); '#' starts a comment."""
    found = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not _FINGERPRINT.match(line):
            raise NoTrustAnchor(
                f"{source} line {number}: {line!r} is not a key fingerprint (ed25519: and 64 hex digits, as "
                "`cleanroom audit fingerprint KEY.pem` prints)"
            )
        found.add(line)
    return frozenset(found)


def configured(
    flags: Sequence[str] = (),
    file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    trail: str | Path | None = None,
) -> Anchors:
    """The verifier's trusted fingerprints: --trusted-key flags and --trusted-keys FILE if given, else the file
    named by CLEANROOM_AUDIT_TRUSTED_KEYS, else .cluster/audit-trusted-keys. A file inside ``trail`` (the
    directory being verified) is refused."""
    env = os.environ if env is None else env
    if flags or file:
        found = parse_fingerprints("\n".join(flags), "--trusted-key")
        if file:
            found |= _read(Path(file), trail)
        return _anchors(found, "--trusted-key/--trusted-keys")
    if env.get(ENV):
        return _anchors(_read(Path(env[ENV]), trail), f"{ENV}={env[ENV]}")
    if DEFAULT_FILE.exists():
        return _anchors(_read(DEFAULT_FILE, trail), str(DEFAULT_FILE))
    raise NoTrustAnchor(
        "no trusted audit keys configured: pass --trusted-key FINGERPRINT or --trusted-keys FILE, or set "
        f"{ENV} to a file of fingerprints (`cleanroom audit fingerprint KEY.pem` prints one); the keys inside "
        "the trail are never trusted on their own"
    )


def _anchors(found: frozenset[str], source: str) -> Anchors:
    if not found:
        raise NoTrustAnchor(f"{source} lists no key fingerprints")
    return Anchors(found, source)


def _read(path: Path, trail: str | Path | None) -> frozenset[str]:
    if trail is not None and path.resolve().is_relative_to(Path(trail).resolve()):
        raise NoTrustAnchor(
            f"{path} lies inside the trail being verified: whoever can rewrite the trail could rewrite it too; "
            "keep the trusted fingerprints elsewhere"
        )
    if not path.exists():
        raise NoTrustAnchor(f"the trusted keys file {path} does not exist")
    return parse_fingerprints(path.read_text(), str(path))


def pinned(anchors: Anchors, candidates: Mapping[str, Mapping[str, Any]]) -> dict[str, Ed25519PublicKey]:
    """The keys among ``candidates`` (a keys.json: JWK by key id) whose fingerprint is trusted, by key id."""
    keys = {}
    for jwk in candidates.values():
        try:
            key = jwt.algorithms.OKPAlgorithm.from_jwk(dict(jwk))
        except (jwt.PyJWTError, ValueError, TypeError):
            continue  # not a key we could use: a checkpoint signed with it is reported as untrusted
        if isinstance(key, Ed25519PublicKey) and fingerprint(key) in anchors.fingerprints:
            keys[key_id(key)] = key
    return keys


def key_fingerprint(pem: str | Path) -> str:
    """The fingerprint of a PEM key file, private (the signing key) or public."""
    data = Path(pem).read_bytes()
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{pem} is not an Ed25519 key")
        return fingerprint(private.public_key())
    public = serialization.load_pem_public_key(data)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError(f"{pem} is not an Ed25519 key")
    return fingerprint(public)


def write_trusted_keys(path: str | Path, fingerprints: Sequence[str]) -> None:
    """Write a trusted-keys file (the dev stack and tests, beside the signing key, outside the trail)."""
    Path(path).write_text(
        "# Fingerprints of the audit signing keys this machine's verifier trusts (docs/audit.md).\n"
        + "".join(f"{f}\n" for f in fingerprints)
    )


def keys_json(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "keys.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}
