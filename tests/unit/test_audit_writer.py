"""One audit sink per process: the audit service's client when CLEANROOM_AUDIT_URL is set, the local log for
development, and no silent 'audit trail off' inside a cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleanroom.audit import Actor, read_records, write_signing_key, writer
from cleanroom.audit.client import AuditClient

OPERATOR = Actor("service", "system:serviceaccount:cleanroom-system:cleanroom-operator")
AUDIT_VARIABLES = (
    "CLEANROOM_AUDIT_URL",
    "CLEANROOM_AUDIT_DIR",
    "CLEANROOM_AUDIT_SIGNING_KEY",
    "CLEANROOM_AUDIT_OUTBOX",
    "CLEANROOM_AUDIT_TOKEN_FILE",
    "CLEANROOM_AUDIT_CA_FILE",
    "KUBERNETES_SERVICE_HOST",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in AUDIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    writer.reset()
    yield
    writer.reset()


def test_with_the_charts_settings_events_go_to_the_outbox_for_the_audit_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart sets CLEANROOM_AUDIT_URL and no CLEANROOM_AUDIT_DIR: every event must still be kept."""
    monkeypatch.setenv("CLEANROOM_AUDIT_URL", "https://127.0.0.1:9")  # nobody listens: it waits in the outbox
    monkeypatch.setenv("CLEANROOM_AUDIT_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("CLEANROOM_AUDIT_OUTBOX", str(tmp_path / "outbox"))
    recorded = writer.record(OPERATOR, "workspace.started", {"workspace": "w1"})
    assert recorded is not None
    sink = writer.sink()
    assert isinstance(sink, AuditClient) and sink.pending() == 1
    [line] = (tmp_path / "outbox" / "outbox.jsonl").read_text().splitlines()
    assert json.loads(line)["id"] == recorded.id


def test_the_sink_is_chosen_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_signing_key(tmp_path / "key.pem")
    monkeypatch.setenv("CLEANROOM_AUDIT_DIR", str(tmp_path / "trail"))
    monkeypatch.setenv("CLEANROOM_AUDIT_SIGNING_KEY", str(tmp_path / "key.pem"))
    first = writer.sink()
    monkeypatch.setenv("CLEANROOM_AUDIT_URL", "https://127.0.0.1:9")
    assert writer.sink() is first
    writer.record(OPERATOR, "workspace.started", {"workspace": "w1"})
    assert [r["event"]["action"] for r in read_records(tmp_path / "trail")] == ["workspace.started"]


def test_on_a_laptop_with_no_sink_the_process_runs_and_records_nothing() -> None:
    assert writer.sink() is None
    assert writer.record(OPERATOR, "workspace.started", {"workspace": "w1"}) is None


def test_in_a_cluster_with_no_sink_the_process_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    with pytest.raises(writer.NoAuditSink, match="CLEANROOM_AUDIT_URL"):
        writer.sink()
    with pytest.raises(writer.NoAuditSink):
        writer.record(OPERATOR, "workspace.started", {"workspace": "w1"})


def test_a_half_configured_local_log_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEANROOM_AUDIT_DIR", str(tmp_path / "trail"))
    with pytest.raises(writer.NoAuditSink, match="CLEANROOM_AUDIT_SIGNING_KEY"):
        writer.sink()


@pytest.mark.parametrize("command", [["operator"], ["hub"]])
def test_the_operator_and_the_hub_refuse_to_start_in_a_cluster_without_a_sink(command: list[str]) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in AUDIT_VARIABLES and k != "KUBECONFIG"}
    env["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
    result = subprocess.run(
        [sys.executable, "-m", "cleanroom.cli", *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "refusing to run in a cluster without an audit trail" in result.stderr
