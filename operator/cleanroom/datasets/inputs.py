"""What an ingest reads and how it de-identifies, decided from a Dataset's spec and the Secrets it names.

Pure but for ``secret``, the handler's lookup of one Secret key, which this module calls only for the
references the spec makes (a DICOMweb token first, a user name and password only when there is no token)
and which raises ``LookupError`` naming what is missing. Every way the spec cannot be served is an
``IngestFailure`` whose reason goes into the Dataset's Ready condition.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cleanroom.api import DatasetSpec, DeidentificationMethod, DicomWebSource
from cleanroom.datasets.failure import IngestFailure
from cleanroom.deid import DeidConfig, KeyError_, Keyring, key_from_bytes
from cleanroom.workspaces import latest_snapshot

# (namespace, name, key) -> the key's value; LookupError, whose message names the Secret or key, if missing.
SecretLookup = Callable[[str, str, str], bytes]


@dataclass(frozen=True)
class DirectoryInput:
    path: str


@dataclass(frozen=True)
class S3Input:
    endpoint: str
    bucket: str
    prefix: str
    region: str
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class DicomWebInput:
    url: str
    study_instance_uids: tuple[str, ...]
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)


@dataclass(frozen=True)
class SnapshotInput:
    """Another Dataset's published snapshot."""

    dataset: str
    snapshot: str


Input = DirectoryInput | S3Input | DicomWebInput | SnapshotInput


def resolve_input(
    name: str, spec: DatasetSpec, secret: SecretLookup, parent: Mapping[str, Any] | None
) -> Input:
    """The one source ``spec.source`` names, with its credentials; ``parent`` is the source Dataset of a
    snapshot source as the handler read it (None when it does not exist)."""
    source = spec.source
    try:
        if source.directory is not None:
            return DirectoryInput(source.directory.path)
        if source.s3 is not None:
            s3 = source.s3
            access = secret_key = ""
            if s3.credentials_secret_ref is not None:
                ref = s3.credentials_secret_ref
                access = secret(ref.namespace, ref.name, "accessKey").decode()
                secret_key = secret(ref.namespace, ref.name, "secretKey").decode()
            return S3Input(s3.endpoint, s3.bucket, s3.prefix, s3.region, access, secret_key)
        if source.dicomweb is not None:
            return _dicomweb(source.dicomweb, secret)
    except LookupError as error:
        raise IngestFailure(
            "SecretNotFound", f"{error}; create it, or fix the reference in spec.source"
        ) from error
    if source.dataset is not None:
        snapshot = source.dataset.snapshot or (latest_snapshot(parent) if parent else "")
        if not snapshot:
            raise IngestFailure(
                "SourceDatasetNotReady",
                f'source Dataset "{source.dataset.name}" has no Ready snapshot yet; the ingest starts when it has one',
            )
        return SnapshotInput(source.dataset.name, snapshot)
    raise IngestFailure(
        "InvalidSource", f"Dataset {name}: set exactly one of spec.source.s3, dicomweb, directory or dataset"
    )


def _dicomweb(web: DicomWebSource, secret: SecretLookup) -> DicomWebInput:
    username = password = token = ""
    if web.credentials_secret_ref is not None:
        ref = web.credentials_secret_ref
        # A bearer token where the Secret has one, HTTP basic otherwise.
        try:
            token = secret(ref.namespace, ref.name, "token").decode()
        except LookupError:
            username = secret(ref.namespace, ref.name, "username").decode()
            password = secret(ref.namespace, ref.name, "password").decode()
    return DicomWebInput(web.url, tuple(web.study_instance_uids), username, password, token)


def pseudonym_table(text: str) -> dict[str, str]:
    """A pseudonym table's CSV (original patient ID, pseudonym); rows with fewer than two cells are skipped."""
    return {row[0].strip(): row[1].strip() for row in csv.reader(io.StringIO(text)) if len(row) >= 2}


def deid_config(spec: DatasetSpec, secret: SecretLookup) -> DeidConfig:
    """The de-identification of ``spec``: Anonymize with a throw-away key (consistent within the run,
    irreversible after it), Pseudonymize with the site's key and, if named, its pseudonym table."""
    deid = spec.deidentification
    table = None
    try:
        if deid.method is DeidentificationMethod.ANONYMIZE:
            keyring = Keyring.random()
        else:
            if deid.key_secret_ref is None:
                raise IngestFailure(
                    "KeyMissing", "spec.deidentification.keySecretRef is required for Pseudonymize"
                )
            ref = deid.key_secret_ref
            keyring = Keyring(key_from_bytes(secret(ref.namespace, ref.name, ref.key)))
            if deid.pseudonym_table_secret_ref is not None:
                table_ref = deid.pseudonym_table_secret_ref
                table = pseudonym_table(secret(table_ref.namespace, table_ref.name, table_ref.key).decode())
    except LookupError as error:
        raise IngestFailure(
            "SecretNotFound", f"{error}; create it, or fix spec.deidentification.keySecretRef"
        ) from error
    except KeyError_ as error:
        raise IngestFailure("KeyInvalid", f"{error}; replace the key in the Secret") from error
    return DeidConfig(deid.method, keyring, frozenset(deid.options), deid.burned_in_annotations, table)
