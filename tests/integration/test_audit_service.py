"""The audit service on real tokens: writers' service-account tokens from the real kube-apiserver, refusals
for every bad token, idempotent retries, and the security officers' page (role required, search, CSV,
verification that finds a tampered record)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from cleanroom.audit import Actor, Anchors, AuditEvent, read_records, verify_directory
from cleanroom.audit.client import AuditClient
from tests.integration.audit_service_process import AuditService, audit_service, event
from tests.integration.conftest import free_port

__all__ = ["audit_service"]  # fixture


def post(service: AuditService, token: str | None, body: object) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.post(
        f"{service.url}/api/v1/events", json=body, headers=headers, timeout=10, verify=service.ca
    )


def test_a_writer_with_its_service_account_token_appends_and_a_retry_is_not_stored_twice(
    audit_service: AuditService,
) -> None:
    token = audit_service.writer_token()
    first = event("snapshot.published", dataset="retry-check")
    response = post(audit_service, token, {"events": [first]})
    assert response.status_code == 201, response.text
    [seq] = response.json()["sequences"]
    assert seq > 0 and response.json()["writer"].endswith(":cleanroom-operator")
    again = post(audit_service, token, {"events": [first]})
    assert again.status_code == 201 and again.json()["sequences"] == [-1]
    lines = [
        json.loads(line) for line in (audit_service.directory / "records.jsonl").read_text().splitlines()
    ]
    assert sum(1 for r in lines if r["event"]["id"] == first["id"]) == 1


def test_bad_writer_tokens_and_bad_events_are_refused_with_a_reason(audit_service: AuditService) -> None:
    body = {"events": [event()]}
    assert post(audit_service, None, body).status_code == 401
    assert post(audit_service, "not-a-token", body).status_code == 401
    wrong_audience = post(audit_service, audit_service.writer_token(audience="some-other-service"), body)
    assert wrong_audience.status_code == 401 and "audience" in wrong_audience.json()["error"]
    # A signed-in user's token is not a writer's: another issuer.
    user = post(audit_service, audit_service.user_token("mallory@hospital.example"), body)
    assert user.status_code == 401
    stranger = post(audit_service, audit_service.writer_token("someone-else"), body)
    assert stranger.status_code == 403 and "may not write" in stranger.json()["error"]
    token = audit_service.writer_token()
    invalid = post(audit_service, token, {"events": [{**event(), "action": "data.exfiltrated"}]})
    assert invalid.status_code == 400 and "action" in invalid.json()["error"]
    assert post(audit_service, token, {"nothing": 1}).status_code == 400


def test_the_client_keeps_events_through_an_outage_and_the_service_stores_each_once(
    audit_service: AuditService, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(audit_service.writer_token())
    recorded = [
        AuditEvent(
            "kernel.started", Actor("user", "alice@hospital.example"), resources={"workspace": f"w{i}"}
        )
        for i in range(30)
    ]
    down = AuditClient(
        f"https://127.0.0.1:{free_port()}", token, tmp_path / "outbox", ca_file=audit_service.ca
    )
    for event_ in recorded:
        down.record(event_)
    with pytest.raises(OSError):
        down.deliver()
    assert down.pending() == 30
    # The writer restarts and the service is reachable again: everything is delivered, in order.
    up = AuditClient(audit_service.url, token, tmp_path / "outbox", ca_file=audit_service.ca)
    assert up.deliver() == 30 and up.pending() == 0
    # Each acknowledged batch left a signed receipt with the writer, and the trail agrees with every one.
    assert len(up.receipts()) == 1
    report = verify_directory(
        audit_service.directory,
        Anchors(frozenset(audit_service.trusted_keys.read_text().split()[-1:]), "test"),
        receipts=up.receipts(),
    )
    assert report.problem is None
    # A crash between the service's answer and the durable offset: the batch goes again, stored once.
    (tmp_path / "outbox" / "outbox.sent").write_text("0")
    assert up.deliver() == 30
    stored = [r["event"]["id"] for r in read_records(audit_service.directory)]
    assert all(stored.count(event_.id) == 1 for event_ in recorded)
    positions = [stored.index(event_.id) for event_ in recorded]
    assert positions == sorted(positions)


def sign_in(
    service: AuditService, user: str, groups: tuple[str, ...]
) -> tuple[requests.Session, requests.Response]:
    session = requests.Session()
    session.verify = service.ca
    session.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides session.verify
    response = session.post(
        f"{service.url}/login", data={"token": service.user_token(user, groups)}, timeout=10
    )
    return session, response


def test_the_page_requires_the_security_officer_role(audit_service: AuditService) -> None:
    _session, response = sign_in(audit_service, "alice@hospital.example", ("prostate-ai",))
    assert response.status_code == 403 and "security-officer" in response.text
    anonymous = requests.get(
        f"{audit_service.url}/", allow_redirects=False, timeout=10, verify=audit_service.ca
    )
    assert anonymous.status_code == 302 and anonymous.headers["Location"].startswith("/login")
    forged = requests.get(
        f"{audit_service.url}/",
        cookies={"cleanroom-audit-session": "x.y.z"},
        allow_redirects=False,
        timeout=10,
        verify=audit_service.ca,
    )
    assert forged.status_code == 302


def test_an_officer_searches_exports_and_verification_finds_a_tampered_record(
    audit_service: AuditService,
) -> None:
    token = audit_service.writer_token()
    post(
        audit_service,
        token,
        {"events": [event("data.file.opened", dataset="lung-ct", workspace="w1", namespace="t")]},
    )
    post(
        audit_service,
        token,
        {"events": [event("workspace.started", dataset="other", workspace="w2", namespace="t")]},
    )
    session, response = sign_in(audit_service, "sam@hospital.example", ("security-officer",))
    assert response.status_code == 200 and "Signed in as" in response.text
    history = session.get(f"{audit_service.url}/", params={"dataset": "lung-ct"}, timeout=10)
    assert "data.file.opened" in history.text and "workspace.started" not in history.text
    csv_export = session.get(f"{audit_service.url}/export.csv", params={"dataset": "lung-ct"}, timeout=10)
    rows = csv_export.text.strip().splitlines()
    assert rows[0].startswith("seq,time,received,actor,action") and len(rows) == 2 and "lung-ct" in rows[1]
    ok = session.post(f"{audit_service.url}/verify", timeout=10)
    assert ok.status_code == 200 and "every link and checkpoint signature holds" in ok.text
    assert "signed by trusted keys" in ok.text
    # Change one stored record behind the service's back: the officer's verify names it.
    path = audit_service.directory / "records.jsonl"
    lines = path.read_text().splitlines()
    tampered = json.loads(lines[1])
    tampered["event"]["outcome"] = "denied"
    lines[1] = json.dumps(tampered, separators=(",", ":"), sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    bad = session.post(f"{audit_service.url}/verify", timeout=10)
    assert bad.status_code == 409 and f"FAILED at sequence {tampered['seq']}" in bad.text
