"""The check Job's side of an export (`cleanroom airlock-check`): read the quarantined files and the
snapshot's fingerprints through the presigned URLs of its grant, verify each against the digest the
operator gave, run the disclosure checks (`checks.run_checks`) and write the result to the one URL it may
write (`check_result.build_result`).

The checks parse files a modeller chose (NumPy, NIfTI, PNG, JPEG, zips, tensors), so they run here, in a
pod of their own with no service-account token, no storage key, egress to the store only, and memory, CPU
and time limits, rather than in the operator, which holds the cluster's and the store's credentials. A file
that crashes the checker, exhausts its memory or outlasts its deadline leaves no result, and the operator
rejects the request; what the checker writes is judged before it counts (`check_result.judge_result`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from cleanroom._clients.first_contact import read_first
from cleanroom._clients.tls import https_opener
from cleanroom.airlock import manifests
from cleanroom.airlock.check_result import Subject, build_result
from cleanroom.airlock.checks import ExportedFile, run_checks
from cleanroom.airlock.fingerprints import fingerprints_from_json
from cleanroom.airlock.store import CHECK_GRANT_KIND
from cleanroom.api import ExportPolicy, decode
from cleanroom.snapshots import canonical_json, content_digest

# Where the Job finds its grant URL (from the export's check Secret; never on a command line), and the exit
# status when the store could not be reached: the Job may try again (`manifests.build_check_job`); any
# other failure ends the Job at once (a file that kills the checker kills every retry too).
CHECK_GRANT_VARIABLE = manifests.CHECK_GRANT_VARIABLE
UNREACHABLE_EXIT = manifests.CHECK_UNREACHABLE_EXIT


class CheckerStopped(RuntimeError):
    """The checker could not judge the files; the message says why (the pod's termination message)."""


class StoreUnreachable(CheckerStopped):
    """The store did not answer (the network, not the store, refused)."""


def _get(opener: urllib.request.OpenerDirector, url: str, what: str) -> bytes:
    try:
        with opener.open(url, timeout=120) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        raise CheckerStopped(f"{what}: the store answered HTTP {error.code}") from error
    except OSError as error:
        raise StoreUnreachable(f"{what}: the store cannot be reached: {error}") from error


def _verified(opener: urllib.request.OpenerDirector, item: dict[str, Any], what: str) -> bytes:
    data = _get(opener, str(item["url"]), what)
    if content_digest(data) != item["digest"]:
        raise CheckerStopped(f"{what}: the bytes read do not match the digest the grant gives")
    return data


def check_quarantine(grant_url: str, ca_bundle: str = "") -> dict[str, Any]:
    """Judge the files the grant names and write the result; the result document, as written."""
    opener = https_opener(ca_bundle)
    try:
        grant = json.loads(read_first(opener, grant_url))
    except urllib.error.HTTPError as error:
        raise CheckerStopped(f"the check grant: the store answered HTTP {error.code}") from error
    except OSError as error:
        raise StoreUnreachable(f"the check grant: the store cannot be reached: {error}") from error
    if grant.get("kind") != CHECK_GRANT_KIND:
        raise CheckerStopped("the grant URL does not point at an export check grant")
    files = [ExportedFile(str(f["path"]), _verified(opener, f, str(f["path"]))) for f in grant["files"]]
    fingerprints = fingerprints_from_json(
        json.loads(_verified(opener, grant["fingerprints"], "the snapshot's fingerprints"))
    )
    policy = decode(ExportPolicy, grant["policy"])
    subject = Subject(
        str(grant["request"]), str(grant["snapshot"]), tuple((f.path, content_digest(f.data)) for f in files)
    )
    document = build_result(subject, run_checks(files, fingerprints, policy))
    request = urllib.request.Request(
        str(grant["result"]),
        data=canonical_json(document),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    try:
        with opener.open(request, timeout=120) as response:
            response.read()
    except urllib.error.HTTPError as error:
        raise CheckerStopped(f"writing the result: the store answered HTTP {error.code}") from error
    except OSError as error:
        raise StoreUnreachable(f"writing the result: the store cannot be reached: {error}") from error
    return document
