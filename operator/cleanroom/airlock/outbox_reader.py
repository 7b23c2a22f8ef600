"""The hub's download key on the chart's bundled S3 server (versitygw): an account that may read released
files (``<outbox bucket>/exports/*/outbox/*``) and nothing else, never a snapshot or a quarantined file.

The hub only signs short-lived download links (`hub.exports`); a link works only as far as its key reaches,
so the key's reach is the protection. A site's own store gets the same from its IAM (docs/install.md); the
bundled server has one root account, so the S3 pod's `outbox-reader` container keeps this one in place:
the account through versitygw's admin API (internal IAM, ``--iam-dir``), the outbox bucket, and a bucket
policy that grants the account ``s3:GetObject`` under the outbox prefixes only. A ``user`` account reaches
no bucket that it does not own and no policy names it in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from minio.credentials.credentials import Credentials
from minio.signer import sign_v4_s3

from cleanroom._clients.s3 import s3_client

LOG = logging.getLogger(__name__)
# What the hub presigns (airlock.store.RequestKey.outbox): exports/<namespace>/<name>/<uid>/outbox/<path>.
OUTBOX_OBJECTS = "exports/*/outbox/*"


def outbox_read_policy(bucket: str, reader: str) -> dict[str, Any]:
    """The outbox bucket's policy: ``reader`` (an access key of the bundled server) may get released files,
    nothing else (no list, no write, no other prefix of the bucket)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "HubReadsReleasedFiles",
                "Effect": "Allow",
                "Principal": {"AWS": [reader]},
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/{OUTBOX_OBJECTS}"],
            }
        ],
    }


@dataclass(frozen=True)
class BundledStore:
    """The bundled server and the keys this container holds (kept out of repr, so out of logs)."""

    endpoint: str
    root_access: str = field(repr=False)
    root_secret: str = field(repr=False)
    region: str = "us-east-1"

    def _admin(self, path: str, body: bytes) -> tuple[int, str]:
        """A call to versitygw's admin API (PATCH, signed with the root key as the gateway's CLI signs it)."""
        url = urlsplit(f"{self.endpoint.rstrip('/')}/{path}")
        digest = hashlib.sha256(body).hexdigest()
        now = datetime.now(UTC)
        headers = sign_v4_s3(
            method="PATCH",
            url=url,
            region=self.region,
            headers={
                "Host": url.netloc,
                "x-amz-content-sha256": digest,
                "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ"),
            },
            credentials=Credentials(self.root_access, self.root_secret),
            content_sha256=digest,
            date=now,
        )
        request = urllib.request.Request(
            url.geturl(), data=body, method="PATCH", headers={k: str(v) for k, v in headers.items()}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status), response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode(errors="replace")

    def ensure_reader(self, access: str, secret: str) -> None:
        """The account exists with this secret and the ``user`` role (created, or its secret set again)."""
        account = (
            f"<Account><Access>{escape(access)}</Access><Secret>{escape(secret)}</Secret>"
            "<Role>user</Role><UserID>0</UserID><GroupID>0</GroupID><ProjectID>0</ProjectID></Account>"
        )
        status, text = self._admin("create-user", account.encode())
        if status == 200:
            return
        props = f"<MutableProps><Secret>{escape(secret)}</Secret><Role>user</Role></MutableProps>"
        updated, detail = self._admin(f"update-user?access={access}", props.encode())
        if updated != 200:
            raise RuntimeError(
                f"the S3 server refused the outbox reader account: create {status} {text[:200]}; "
                f"update {updated} {detail[:200]}"
            )

    def ensure_outbox_policy(self, bucket: str, reader: str) -> None:
        """The outbox bucket exists (the operator would make it at the first release) with the policy."""
        client = s3_client(self.endpoint, self.root_access, self.root_secret, self.region)
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        client.set_bucket_policy(bucket, json.dumps(outbox_read_policy(bucket, reader)))


def keep_outbox_reader(
    store: BundledStore, bucket: str, access: str, secret: str, every: float = 300.0, once: bool = False
) -> None:
    """Put the reader account and the bucket policy in place as soon as the server answers, and again every
    ``every`` seconds (a server whose volume was replaced comes back without them)."""
    while True:
        try:
            store.ensure_reader(access, secret)
            store.ensure_outbox_policy(bucket, access)
            LOG.info("outbox reader %s may read %s/%s and nothing else", access, bucket, OUTBOX_OBJECTS)
            if once:
                return
            time.sleep(every)
        except Exception as error:
            # Not up yet (the pod's server starts beside this container), or refused: said, tried again soon.
            LOG.warning("outbox reader not in place yet: %s", error)
            if once:
                raise
            time.sleep(5)
