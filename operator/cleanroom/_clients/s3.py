"""An S3-compatible client for an endpoint URL, and reading one object: storage I/O with no product meaning.

The snapshot store, the audit trail's segment shipper and the S3 source reader share it. TLS certificates
are always verified; a CA bundle adds a CA (`_clients.tls` holds the same rule for urllib).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from minio import Minio

# minio and urllib3 are imported where a client is made or an answer read, not with this module: the ingest
# pipeline and `cleanroom deid` import it for S3Location, and a run that writes to a directory never needs
# them (they cost a command about 0.15 s of start-up).


class EndpointError(ValueError):
    """An endpoint that is not an http:// or https:// URL; the message says which."""


@dataclass(frozen=True)
class S3Location:
    """A bucket at an endpoint, with the keys to reach it (kept out of repr, so out of logs)."""

    endpoint: str
    bucket: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str = ""
    ca_bundle: str = ""
    server_side_encryption: bool = False


def s3_client(
    endpoint: str, access_key: str, secret_key: str, region: str = "", ca_bundle: str = ""
) -> Minio:
    """A minio client for an http(s) endpoint URL. Certificate verification stays on; ``ca_bundle`` adds a CA."""
    import urllib3
    from minio import Minio

    url = urlparse(endpoint)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise EndpointError(f"S3 endpoint {endpoint!r} must be an http:// or https:// URL")
    http = None
    if ca_bundle:
        # As many connections as minio's own pool keeps (urllib3's default is one: concurrent requests would
        # each open and drop their own).
        http = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED", ca_certs=ca_bundle, retries=urllib3.Retry(total=3), maxsize=10
        )
    return Minio(
        url.netloc,
        access_key=access_key,
        secret_key=secret_key,
        secure=url.scheme == "https",
        region=region or None,
        http_client=http,
    )


def object_exists(client: Minio, bucket: str, key: str) -> bool:
    """Whether an object exists (its metadata answers), without reading it."""
    from minio.error import S3Error

    try:
        client.stat_object(bucket, key)
    except S3Error as error:
        if error.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
            return False
        raise
    return True


def read_object(
    client: Minio, bucket: str, key: str, version_id: str | None = None, limit: int | None = None
) -> bytes | None:
    """An object's bytes (one version of it, if given), or None when it does not exist. ``limit``: read at
    most that many bytes and one more, enough to tell that an object someone else wrote is too large."""
    from minio.error import S3Error

    try:
        response = client.get_object(bucket, key, version_id=version_id)
    except S3Error as error:
        if error.code in ("NoSuchKey", "NoSuchObject", "NoSuchVersion"):
            return None
        raise
    try:
        return bytes(response.read() if limit is None else response.read(limit + 1))
    finally:
        response.close()
        response.release_conn()
