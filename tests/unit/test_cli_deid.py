"""`cleanroom deid` as a person runs it: a directory in, a directory out, a summary, a report, exit codes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from tests import phi_corpus


def cleanroom(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cleanroom.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_deid_writes_clean_files_a_summary_and_a_report(tmp_path: Path) -> None:
    corpus = phi_corpus.build(tmp_path / "in")
    key = tmp_path / "site.key"
    key.write_text(base64.b64encode(os.urandom(32)).decode())
    result = cleanroom(
        "deid",
        str(tmp_path / "in"),
        str(tmp_path / "out"),
        "--key-file",
        str(key),
        "--option",
        "CleanDescriptors",
        "--report",
        str(tmp_path / "report.json"),
        "--workers",
        "1",
    )
    assert result.returncode == 0, result.stderr
    kept = sorted((tmp_path / "out").rglob("*.dcm"))
    expected_kept = sum(1 for f in corpus if not f.expect_quarantine)
    assert len(kept) == expected_kept
    assert f"kept {expected_kept} files" in result.stdout
    assert "ResidualIdentifier" in result.stdout and "BurnedInAnnotation" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["files"] == len(corpus) - expected_kept
    assert {i["item"] for i in report["items"]} == {f.name for f in corpus if f.expect_quarantine}
    for path in kept:
        assert path.relative_to(tmp_path / "out").parts[0].startswith("PSN-")
        data = path.read_bytes()
        assert not any(token.encode() in data for token in phi_corpus.TOKENS)


def test_bad_input_gets_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    no_key = cleanroom("deid", str(tmp_path / "in"), str(tmp_path / "out"))
    assert no_key.returncode == 2 and "--key-file" in no_key.stderr
    bad_option = cleanroom("deid", str(tmp_path / "in"), str(tmp_path / "out"), "--option", "KeepEverything")
    assert bad_option.returncode == 2 and "CleanDescriptors" in bad_option.stderr
    short_key = tmp_path / "short.key"
    short_key.write_bytes(b"too short")
    weak = cleanroom("deid", str(tmp_path / "in"), str(tmp_path / "out"), "--key-file", str(short_key))
    assert weak.returncode == 2 and "at least 32" in weak.stderr
    missing = cleanroom("deid", str(tmp_path / "nowhere"), str(tmp_path / "out"), "--method", "anonymize")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
