"""`cleanroom operator` runs as a real process: healthy, JSON logs, and a clean exit on SIGTERM."""

from __future__ import annotations

import json

from tests.integration.conftest import STATE, OperatorProcess


def test_operator_logs_json_and_exits_cleanly_on_sigterm(kubeconfig: str) -> None:
    process = OperatorProcess(kubeconfig, STATE / "test-operator-shutdown.log")
    code = process.stop()
    assert code == 0, process.log_path.read_text()[-3000:]
    lines = [line for line in process.log_path.read_text().splitlines() if line.strip()]
    assert lines, "the operator logged nothing"
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records, f"no JSON log lines in:\n{lines[:5]}"
    assert all("message" in record for record in records)
