"""Each Prometheus metric of the operator, the hub and the audit service moves when its event happens.

The scrape of the real processes is tests/integration/test_metrics.py; here each metric is driven directly
(the operator's and hub's live in prometheus_client's process-wide registry, so tests read differences)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cleanroom.audit import write_signing_key
from cleanroom.audit.spool import AuditLog, load_signing_key
from cleanroom.auditweb.metrics import ServiceMetrics
from cleanroom.auditweb.service import AuditService
from cleanroom.handlers import _metrics
from cleanroom.hub import metrics as hub_metrics
from cleanroom.hub.authenticator import JWTAuthenticator
from cleanroom.ingest import IngestResult
from cleanroom.ingest.pipeline import QuarantineEntry
from cleanroom.snapshots import FileEntry
from cleanroom.tokens import TokenRejected, write_dev_issuer
from tests.unit.test_audit_service_app import Setup, event


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class SourceUnreachable(Exception):
    reason = "SourceUnreachable"


def test_a_reconcile_pass_is_counted_and_timed_and_its_error_named_by_reason_or_class() -> None:
    passes, errors = value("cleanroom_reconciles_total", kind="Test"), "cleanroom_reconcile_errors_total"
    timed_count = value("cleanroom_reconcile_duration_seconds_count", kind="Test")

    @_metrics.timed("Test")
    def reconcile(fail: BaseException | None = None) -> str:
        if fail is not None:
            raise fail
        return "done"

    assert reconcile() == "done"
    with pytest.raises(SourceUnreachable):
        reconcile(SourceUnreachable("the PACS is down"))
    with pytest.raises(KeyError):
        reconcile(KeyError("x"))
    assert value("cleanroom_reconciles_total", kind="Test") == passes + 3
    assert value("cleanroom_reconcile_duration_seconds_count", kind="Test") == timed_count + 3
    assert value(errors, kind="Test", error="SourceUnreachable") >= 1
    assert value(errors, kind="Test", error="KeyError") >= 1


def test_the_operators_passes_are_the_ones_timed() -> None:
    from cleanroom.handlers import dataset, workspace

    # functools.wraps keeps the pass reachable: the handlers call the timed wrapper.
    assert workspace._reconcile_once.__wrapped__  # type: ignore[attr-defined]
    assert dataset.reconcile_dataset.__wrapped__  # type: ignore[attr-defined]


def kept(path: str) -> FileEntry:
    return FileEntry(path=path, digest="sha256:0", size=1, patient="p", study="s", series="r")


def test_an_ingest_run_counts_files_by_outcome_quarantines_by_reason_and_its_rate() -> None:
    before = {o: value("cleanroom_ingest_files_total", outcome=o) for o in ("kept", "quarantined", "failed")}
    burned = value("cleanroom_quarantined_files_total", reason="BurnedInAnnotation")
    result = IngestResult(
        files=[kept("a.dcm"), kept("b.dcm"), kept("c.dcm")],
        quarantined=[QuarantineEntry("d.dcm", "BurnedInAnnotation", "pixel data may show text")],
        failed=[QuarantineEntry("e.dcm", "ReadFailed", "timeout")],
    )
    _metrics.ingested("ct-sample", result, seconds=2.5)
    assert value("cleanroom_ingest_files_total", outcome="kept") == before["kept"] + 3
    assert value("cleanroom_ingest_files_total", outcome="quarantined") == before["quarantined"] + 1
    assert value("cleanroom_ingest_files_total", outcome="failed") == before["failed"] + 1
    assert value("cleanroom_quarantined_files_total", reason="BurnedInAnnotation") == burned + 1
    assert value("cleanroom_ingest_files_per_second", dataset="ct-sample") == 5 / 2.5


def test_a_published_snapshot_sets_its_datasets_bytes() -> None:
    _metrics.snapshot_published("ct-sample", 212_000_000)
    assert value("cleanroom_snapshot_bytes", dataset="ct-sample") == 212_000_000


def test_workspaces_are_counted_by_the_phase_of_their_last_pass_and_every_phase_is_reported() -> None:
    phases = _metrics.WorkspacePhases()

    def counts() -> dict[str, float]:
        [family] = phases.collect()
        return {sample.labels["phase"]: sample.value for sample in family.samples}

    phases.set(("a", "one"), "Starting")
    phases.set(("a", "two"), "Running")
    phases.set(("a", "one"), "Running")
    phases.set(("b", "one"), "Failed")
    assert counts() == {"Pending": 0, "Starting": 0, "Running": 2, "Stopped": 0, "Expired": 0, "Failed": 1}
    phases.forget(("a", "two"))
    assert counts()["Running"] == 1
    # The operator's own collector is in the registry Prometheus scrapes.
    assert "cleanroom_workspaces{" in generate_latest(REGISTRY).decode()


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("no token: send Authorization: Bearer <JWT> or paste it into the form", "no_token"),
        ("not a JWT (expected header.payload.signature)", "malformed"),
        ("token expired; sign in again for a fresh one", "expired"),
        ("token is for another audience; expected 'cleanroom-hub'", "audience"),
        ("token is from another issuer; expected 'https://x'", "issuer"),
        ("signature does not verify", "signature"),
        ("unknown signing key (kid 'x'); the issuer's key set may need refreshing", "unknown_key"),
        ("algorithm 'HS256' is not accepted; use one of RS256", "algorithm"),
        ("token lacks the 'exp' claim", "claims"),
        ("the token's email is not verified (email_verified is not true); ...", "email_unverified"),
        ("something new", "other"),
    ],
)
def test_a_refused_sign_in_is_counted_by_a_kind_from_a_fixed_set(reason: str, kind: str) -> None:
    assert hub_metrics.refusal_kind(reason) == kind


def test_the_authenticator_counts_sign_ins_and_refusals(tmp_path: Path) -> None:
    issuer = write_dev_issuer(tmp_path / "issuer", "https://login.test", "cleanroom-hub")
    auth = JWTAuthenticator(
        jwks_file=str(tmp_path / "issuer" / "dev-jwks.json"),
        issuer="https://login.test",
        audience="cleanroom-hub",
    )
    signed_in, expired = (
        value("cleanroom_hub_sign_ins_total"),
        value("cleanroom_hub_sign_in_refusals_total", status="401", kind="expired"),
    )
    asyncio.run(auth.authenticate(None, {"token": issuer.issue("alice@hospital.example")}))
    with pytest.raises(TokenRejected):
        asyncio.run(
            auth.authenticate(None, {"token": issuer.issue("alice@hospital.example", lifetime_seconds=-120)})
        )
    assert value("cleanroom_hub_sign_ins_total") == signed_in + 1
    assert value("cleanroom_hub_sign_in_refusals_total", status="401", kind="expired") == expired + 1


def test_access_refusals_are_counted_by_kind() -> None:
    before = value("cleanroom_hub_access_refusals_total", kind="in_use")
    hub_metrics.access_refused("in_use")
    assert value("cleanroom_hub_access_refusals_total", kind="in_use") == before + 1


def scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_audit_services_chain_length_and_checkpoint_age(tmp_path: Path) -> None:
    write_signing_key(tmp_path / "signing.pem")
    log = AuditLog(tmp_path / "trail", load_signing_key(tmp_path / "signing.pem"))
    now = [0.0]
    metrics = ServiceMetrics(log, clock=lambda: now[0])
    assert scraped(metrics.exposition().decode())[("cleanroom_audit_chain_length", ())] == 0
    log.checkpoint()
    checkpoints = tmp_path / "trail" / "checkpoints.jsonl"
    os.utime(checkpoints, (1000.0, 1000.0))
    now[0] = 1090.0
    assert scraped(metrics.exposition().decode())[("cleanroom_audit_last_checkpoint_age_seconds", ())] == 90


def test_the_audit_service_serves_events_received_chain_length_and_failed_verifications(
    tmp_path: Path,
) -> None:
    setup = Setup(tmp_path)  # no trusted keys configured: Verify fails, and says why

    async def scenario(client: TestClient[Any, Any]) -> None:
        body = {"events": [event("one"), event("two", time="2026-11-02T10:00:01.000000Z")]}
        assert (await client.post("/api/v1/events", json=body, headers=setup.writer())).status == 201
        verify = await client.post("/verify", headers=setup.officer())
        assert verify.status == 409
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        samples = scraped(await response.text())
        assert samples[("cleanroom_audit_events_received_total", (("intake", "writers"),))] == 2
        assert samples[("cleanroom_audit_events_received_total", (("intake", "kubernetes"),))] == 0
        assert samples[("cleanroom_audit_chain_length", ())] == 2
        assert samples[("cleanroom_audit_verification_failures_total", ())] == 1
        assert samples[("cleanroom_audit_verifications_total", (("result", "failed"),))] == 1
        assert ("cleanroom_audit_checkpoint_failures_total", ()) in samples

    setup.run(scenario)


def test_the_hub_gives_prometheus_a_token_that_reads_metrics_only() -> None:
    from traitlets.config import Config

    from cleanroom.hub.config import ConfigError, configure

    env = {
        "CLEANROOM_HUB_ISSUER": "https://login.test",
        "CLEANROOM_HUB_AUDIENCE": "cleanroom-hub",
        "CLEANROOM_HUB_JWKS_FILE": "/dev/null",
        "CLEANROOM_HUB_METRICS_TOKEN": "p" * 40,
    }
    c = Config()
    configure(c, env)
    assert c.JupyterHub.authenticate_prometheus is True
    assert c.JupyterHub.services == [{"name": "prometheus", "api_token": "p" * 40}]
    assert json.dumps(c.JupyterHub.load_roles) == json.dumps(
        [{"name": "prometheus", "scopes": ["read:metrics"], "services": ["prometheus"]}]
    )
    with pytest.raises(ConfigError, match="at least 32"):
        configure(Config(), {**env, "CLEANROOM_HUB_METRICS_TOKEN": "short"})


def test_with_a_metrics_port_the_audit_service_serves_metrics_there_and_not_on_its_own_port(
    tmp_path: Path,
) -> None:
    # Writers and the API server reach the service's own port from anywhere: the counts must not be there
    # once a port of their own, which a network policy can keep for Prometheus, serves them.
    setup = Setup(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> None:
        app = AuditService(setup.config).app(metrics_port=port, metrics_host="127.0.0.1")
        async with TestClient(TestServer(app)) as client:
            body = {"events": [event("one")]}
            assert (await client.post("/api/v1/events", json=body, headers=setup.writer())).status == 201
            assert (await client.get("/metrics")).status == 404
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    assert response.status == 200
                    samples = scraped(await response.text())
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    assert response.status == 404  # the metrics port serves nothing else
        assert samples[("cleanroom_audit_events_received_total", (("intake", "writers"),))] == 1
        assert samples[("cleanroom_audit_chain_length", ())] == 1

    asyncio.run(main())
