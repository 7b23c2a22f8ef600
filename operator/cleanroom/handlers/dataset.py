"""Thin kopf handlers for Datasets: resolve the source and key, run the ingest, publish, write status.

The decisions live in the cores (de-identification, manifests); this module wires Secrets, the snapshot
store and the worker processes together and tells people what happened through status and Events.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from cleanroom import config
from cleanroom.api import (
    DATASETS,
    GROUP,
    VERSION,
    Condition,
    DatasetSpec,
    DeidentificationMethod,
    decode,
    merge_conditions,
)
from cleanroom.api.contract import READY
from cleanroom.deid import DeidConfig, KeyError_, Keyring, key_from_bytes
from cleanroom.handlers import _audit, _kube, _metrics
from cleanroom.ingest import (
    NOT_ATTEMPTED,
    WORKER_DIED,
    IngestResult,
    Limits,
    QuarantineEntry,
    SnapshotReader,
    StoreSink,
    publish,
    run,
)
from cleanroom.snapshots import SnapshotError, SnapshotStore, summary
from cleanroom.sources import (
    DicomWebReader,
    DirectoryReader,
    S3Reader,
    SourceError,
    SourceReader,
)
from cleanroom.workspaces import latest_snapshot

MAX_BACKOFF_SECONDS = 600


class IngestFailure(Exception):
    """An ingest that cannot go on: ``reason`` for machines, the message for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def backoff(retry: int) -> float:
    return float(min(15 * 2**retry, MAX_BACKOFF_SECONDS))


def _status(body: Mapping[str, Any], phase: str, condition: Condition, **fields: Any) -> dict[str, Any]:
    generation = int(body["metadata"].get("generation", 0))
    current = dict(body.get("status") or {})
    return {
        **current,
        **fields,
        "phase": phase,
        "observedGeneration": generation,
        "conditions": merge_conditions(
            current.get("conditions"), [condition], generation=generation, now=datetime.now(UTC)
        ),
    }


def build_reader(name: str, spec: DatasetSpec) -> SourceReader:
    source = spec.source
    try:
        if source.directory is not None:
            return DirectoryReader(source.directory.path)
        if source.s3 is not None:
            s3 = source.s3
            access = secret = ""
            if s3.credentials_secret_ref is not None:
                ref = s3.credentials_secret_ref
                access = _kube.secret_value(ref.namespace, ref.name, "accessKey").decode()
                secret = _kube.secret_value(ref.namespace, ref.name, "secretKey").decode()
            return S3Reader(s3.endpoint, s3.bucket, s3.prefix, s3.region, access, secret)
        if source.dicomweb is not None:
            web = source.dicomweb
            username = password = token = ""
            if web.credentials_secret_ref is not None:
                ref = web.credentials_secret_ref
                try:
                    token = _kube.secret_value(ref.namespace, ref.name, "token").decode()
                except _kube.SecretMissing:
                    username = _kube.secret_value(ref.namespace, ref.name, "username").decode()
                    password = _kube.secret_value(ref.namespace, ref.name, "password").decode()
            return DicomWebReader(web.url, web.study_instance_uids, username, password, token)
        if source.dataset is not None:
            parent = _kube.get_dataset(source.dataset.name)
            snapshot = source.dataset.snapshot or (latest_snapshot(parent) if parent else "")
            if not snapshot:
                raise IngestFailure(
                    "SourceDatasetNotReady",
                    f'source Dataset "{source.dataset.name}" has no Ready snapshot yet; the ingest starts when it has one',
                )
            return SnapshotReader(config.snapshot_location(), source.dataset.name, snapshot)
    except _kube.SecretMissing as error:
        raise IngestFailure(
            "SecretNotFound", f"{error}; create it, or fix the reference in spec.source"
        ) from error
    raise IngestFailure(
        "InvalidSource", f"Dataset {name}: set exactly one of spec.source.s3, dicomweb, directory or dataset"
    )


def build_deid_config(spec: DatasetSpec) -> DeidConfig:
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
            keyring = Keyring(key_from_bytes(_kube.secret_value(ref.namespace, ref.name, ref.key)))
            if deid.pseudonym_table_secret_ref is not None:
                table_ref = deid.pseudonym_table_secret_ref
                raw = _kube.secret_value(table_ref.namespace, table_ref.name, table_ref.key).decode()
                table = {
                    row[0].strip(): row[1].strip() for row in csv.reader(io.StringIO(raw)) if len(row) >= 2
                }
    except _kube.SecretMissing as error:
        raise IngestFailure(
            "SecretNotFound", f"{error}; create it, or fix spec.deidentification.keySecretRef"
        ) from error
    except KeyError_ as error:
        raise IngestFailure("KeyInvalid", f"{error}; replace the key in the Secret") from error
    return DeidConfig(deid.method, keyring, frozenset(deid.options), deid.burned_in_annotations, table)


def _adopt_published(
    store: SnapshotStore, name: str, origin: Mapping[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """A snapshot already published for this Dataset generation (the operator stopped before writing status)."""
    for digest, manifest in store.snapshots(name):
        if manifest.get("origin") == dict(origin):
            return digest, manifest
    return None


# The Ready condition's reason for each way a run can fail.
FAILURE_REASONS = {WORKER_DIED: "IngestWorkerDied"}


def run_failure(result: IngestResult) -> IngestFailure | None:
    """Why the run must not be published (a source or store outage, a dead worker), or None."""
    outage = result.outage
    if outage is None:
        return None
    untried = sum(1 for f in result.failed if f.reason == NOT_ATTEMPTED)
    failed = len(result.failed) - untried
    done = len(result.files) + len(result.quarantined)
    return IngestFailure(
        FAILURE_REASONS.get(outage.reason, outage.reason),
        f"{failed} files failed ({outage.reason}; first: {outage.item}: {outage.detail}); the run stopped "
        f"there with {done} files done and {untried} not tried, and nothing was published. It is tried again "
        "with backoff; files already stored are not stored again.",
    )


def outage_status(entry: QuarantineEntry) -> Condition:
    """The condition written the moment the first outage stops the run (before the workers have drained)."""
    return Condition(
        READY,
        "False",
        FAILURE_REASONS.get(entry.reason, entry.reason),
        f"stopping the ingest: {entry.item}: {entry.detail}",
    )


def ingest_fingerprint(spec: Mapping[str, Any]) -> str:
    """What a snapshot depends on: the source and the de-identification, not access or retention."""
    relevant = {"source": spec.get("source"), "deidentification": spec.get("deidentification")}
    return "sha256:" + hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


@_metrics.timed("Dataset")
def reconcile_dataset(body: Mapping[str, Any], logger: Any) -> None:
    """Ingest and publish the snapshot for the Dataset's source and de-identification, or adopt the one
    already published for them."""
    name = body["metadata"]["name"]
    spec = decode(DatasetSpec, body["spec"])
    fingerprint = ingest_fingerprint(body["spec"])
    origin = {"uid": body["metadata"]["uid"], "specHash": fingerprint}
    try:
        store = SnapshotStore(config.snapshot_location())
        store.ensure_bucket()
    except (SnapshotError, Exception) as error:
        raise IngestFailure("StorageUnavailable", f"the snapshot store cannot be reached: {error}") from error
    published = _adopt_published(store, name, origin)
    if published is None:
        reader = build_reader(name, spec)
        deid_config = build_deid_config(spec)
        try:
            items, skipped = reader.items(), reader.skipped()
        except SourceError as error:
            raise IngestFailure("SourceUnreachable", str(error)) from error
        if not items:
            raise IngestFailure(
                "SourceEmpty",
                f"the source {reader.describe()['location']} holds no files; check the path or prefix",
            )
        kopf.event(
            dict(body), type="Normal", reason="IngestStarted", message=f"de-identifying {len(items)} files"
        )
        _audit.record(
            "dataset.ingest.started",
            {"dataset": name},
            reason=f"{len(items)} files from {reader.describe()['location']}",
        )
        current = _kube.get_dataset(name) or dict(body)
        _kube.patch_dataset_status(
            name,
            _status(
                current,
                "Ingesting",
                Condition(READY, "False", "Ingesting", f"de-identifying {len(items)} files"),
                progress={"filesDone": 0, "filesTotal": len(items)},
            ),
        )

        def progress(done: int, total: int) -> None:
            _kube.patch_dataset_status(name, {"progress": {"filesDone": done, "filesTotal": total}})

        def outage(entry: QuarantineEntry) -> None:
            # Said at once: the workers still finish the file in hand, which may take a few timeouts.
            fresh = _kube.get_dataset(name) or dict(body)
            _kube.patch_dataset_status(name, _status(fresh, "Failed", outage_status(entry)))

        started = time.monotonic()
        cap = config.ingest_max_file_bytes()
        result = run(
            reader,
            items,
            deid_config,
            StoreSink(store.location),
            workers=config.ingest_workers(),
            progress=progress,
            limits=Limits(cap, cap),
            skipped=skipped,
            outage=outage,
        )
        _metrics.ingested(name, result, time.monotonic() - started)
        failure = run_failure(result)
        if failure is not None:
            raise failure
        published = publish(
            store, dataset=name, result=result, reader=reader, config=deid_config, origin=origin
        )
        logger.info(
            f"published {published[0]}: {len(result.files)} files, {len(result.quarantined)} quarantined, "
            f"{time.monotonic() - started:.1f}s"
        )
        for entry in result.quarantined:
            kopf.warn(
                dict(body),
                reason="FileQuarantined",
                message=f"{entry.item}: {entry.reason}: {entry.detail}"[:1000],
            )
            _audit.record(
                "dataset.file.quarantined",
                {"dataset": name, "file": entry.item},
                outcome="failure",
                reason=f"{entry.reason}: {entry.detail}",
            )
        _audit.record("snapshot.published", {"dataset": name, "snapshot": published[0]})
        _audit.record(
            "dataset.ingest.finished",
            {"dataset": name, "snapshot": published[0]},
            reason=f"{len(result.files)} files kept, {len(result.quarantined)} quarantined",
        )
    digest, manifest = published
    snapshot = summary(manifest, digest)
    _metrics.snapshot_published(name, int(snapshot["bytes"]))
    current = _kube.get_dataset(name) or dict(body)
    message = (
        f"snapshot {snapshot['shortDigest']} published: {snapshot['files']} files, {snapshot['patients']} patients, "
        f"{manifest['quarantine']['files']} quarantined"
    )
    _kube.patch_dataset_status(
        name,
        _status(
            current,
            "Ready",
            Condition(READY, "True", "SnapshotPublished", message),
            snapshot=snapshot,
            ingestedSpec=fingerprint,
            quarantine=dict(manifest["quarantine"]),
            progress={
                "filesDone": snapshot["files"] + manifest["quarantine"]["files"],
                "filesTotal": snapshot["files"] + manifest["quarantine"]["files"],
            },
        ),
    )
    kopf.event(dict(body), type="Normal", reason="SnapshotPublished", message=message)
    pruned = store.prune(name, spec.retention.keep_snapshots, _kube.workspaces_using(name) | {digest})
    for old in pruned:
        kopf.event(
            dict(body),
            type="Normal",
            reason="SnapshotPruned",
            message=f"snapshot {old} pruned (retention.keepSnapshots)",
        )
        _audit.record("snapshot.pruned", {"dataset": name, "snapshot": old}, reason="retention.keepSnapshots")


@kopf.on.resume(GROUP, VERSION, DATASETS)
@kopf.on.create(GROUP, VERSION, DATASETS)
@kopf.on.update(GROUP, VERSION, DATASETS)
def dataset_changed(
    body: kopf.Body, meta: kopf.Meta, status: kopf.Status, retry: int, logger: Any, **_: Any
) -> None:
    if status.get("observedGeneration") == meta.get("generation") and status.get("phase") == "Ready":
        return
    try:
        reconcile_dataset(body, logger)
    except IngestFailure as failure:
        current = _kube.get_dataset(body["metadata"]["name"]) or dict(body)
        _kube.patch_dataset_status(
            body["metadata"]["name"],
            _status(current, "Failed", Condition(READY, "False", failure.reason, str(failure))),
        )
        kopf.warn(dict(body), reason=failure.reason, message=str(failure))
        _audit.record(
            "dataset.ingest.failed",
            {"dataset": body["metadata"]["name"]},
            outcome="failure",
            reason=f"{failure.reason}: {failure}",
        )
        raise kopf.TemporaryError(f"{failure.reason}: {failure}", delay=backoff(retry)) from failure
