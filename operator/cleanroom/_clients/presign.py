"""Presigned S3 GET URLs (Signature Version 4, query-string authentication), computed with the standard
library alone: the hub hands a requester a short-lived link to a released export without loading a storage
client (its import contract keeps minio out of the internet-facing pod).

Follows AWS's "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)": path-style URL,
only the host header signed, payload UNSIGNED-PAYLOAD. A unit test holds it to minio's own presigner.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

# SigV4 presigned URLs live at most seven days.
MAX_LIFETIME = timedelta(days=7)


@dataclass(frozen=True)
class Signer:
    endpoint: str
    bucket: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str = "us-east-1"


def _encode(text: str, safe: str = "") -> str:
    # RFC 3986 unreserved characters stay; everything else is percent-encoded, as SigV4 requires.
    return quote(text, safe="-_.~" + safe)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def presigned_get(signer: Signer, key: str, lifetime: timedelta, now: datetime | None = None) -> str:
    if not timedelta(seconds=1) <= lifetime <= MAX_LIFETIME:
        raise ValueError("a presigned URL lives between one second and seven days")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    url = urlsplit(signer.endpoint)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"endpoint {signer.endpoint!r} must be an http:// or https:// URL")
    host = url.netloc
    if (url.scheme, url.port) in (("http", 80), ("https", 443)):
        host = url.hostname or host
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{signer.region}/s3/aws4_request"
    path = f"/{signer.bucket}/{_encode(key, safe='/')}"
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{signer.access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(int(lifetime.total_seconds())),
        "X-Amz-SignedHeaders": "host",
    }
    canonical_query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query.items()))
    canonical_request = "\n".join(
        ("GET", path, canonical_query, f"host:{host}\n", "host", "UNSIGNED-PAYLOAD")
    )
    to_sign = "\n".join(
        ("AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
    )
    key_bytes = _hmac(("AWS4" + signer.secret_key).encode(), day)
    for part in (signer.region, "s3", "aws4_request"):
        key_bytes = _hmac(key_bytes, part)
    signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{url.scheme}://{url.netloc}{path}?{canonical_query}&X-Amz-Signature={signature}"
