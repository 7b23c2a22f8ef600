"""`cleanroom operator` runs as a real process: healthy, JSON logs, and a clean exit on SIGTERM."""

from __future__ import annotations

import json

from tests.integration.conftest import OperatorProcess


def test_operator_logs_json_and_exits_cleanly_on_sigterm(operator: OperatorProcess) -> None:
    code = operator.stop()
    lines = operator.new_log_lines()
    operator.start()
    assert code == 0, "\n".join(lines[-20:])
    assert lines, "the operator logged nothing"
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records, f"no JSON log lines in:\n{lines[:5]}"
    assert all("message" in record for record in records)
