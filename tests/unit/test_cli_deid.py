"""`cleanroom deid` as a person runs it: a directory in, a directory out, a summary, a report, exit codes."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pydicom
from pydicom.data import get_testdata_file

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


def test_a_pseudonymized_output_anonymized_again_is_kept_whole(tmp_path: Path) -> None:
    """A derived Dataset anonymizes a pseudonymized snapshot: the first run's dummies and its pseudonym
    prefix are no identifiers, so no file of the second run is quarantined as ResidualIdentifier."""
    (tmp_path / "raw").mkdir()
    for index in range(3):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(tmp_path / "raw" / f"ct-{index}.dcm")
    key = tmp_path / "site.key"
    key.write_text(base64.b64encode(os.urandom(32)).decode())
    first = cleanroom(
        "deid", str(tmp_path / "raw"), str(tmp_path / "site"), "--key-file", str(key), "--quiet"
    )
    assert first.returncode == 0 and "kept 3 files" in first.stdout, first.stdout + first.stderr
    second = cleanroom(
        "deid", str(tmp_path / "site"), str(tmp_path / "central"), "--method", "anonymize", "--quiet"
    )
    assert second.returncode == 0 and "kept 3 files" in second.stdout, second.stdout + second.stderr
    for path in (tmp_path / "central").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert str(ds.PatientID).startswith("PSN-") and str(ds.PatientID) not in {
            str(pydicom.dcmread(p).PatientID) for p in (tmp_path / "site").rglob("*.dcm")
        }


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


def _ct(path: Path, sop_instance_uid: str, instance_number: int = 1) -> None:
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.SOPInstanceUID = sop_instance_uid
    dataset.InstanceNumber = instance_number
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path)


def _entries(root: Path) -> set[str]:
    """Every entry a person sees under ``root``: files, links, FIFOs, and directories with nothing in them."""
    found = set()
    for directory, names, files in os.walk(root):
        base = Path(directory)
        if not names and not files and base != root:
            found.add(str(base.relative_to(root)) + "/")
        for name in files + [n for n in names if (base / n).is_symlink()]:
            found.add(str((base / name).relative_to(root)))
    return found


def test_every_entry_of_the_input_ends_in_the_report(tmp_path: Path) -> None:
    source = tmp_path / "in"
    _ct(source / "a.dcm", "1.2.826.0.1.3680043.8.498.1")
    _ct(source / "sub" / "b.dcm", "1.2.826.0.1.3680043.8.498.2")
    # Two different files with one SOP Instance UID: one is kept, the other reported, none overwritten.
    _ct(source / "dup-1.dcm", "1.2.826.0.1.3680043.8.498.3", instance_number=1)
    _ct(source / "dup-2.dcm", "1.2.826.0.1.3680043.8.498.3", instance_number=2)
    (source / "notes.txt").write_text("not DICOM")
    os.symlink("a.dcm", source / "link-to-a.dcm")
    os.symlink("nowhere.dcm", source / "dangling.dcm")
    os.symlink("loop-2", source / "loop-1")
    os.symlink("loop-1", source / "loop-2")
    os.symlink("..", source / "sub" / "up")
    os.mkfifo(source / "pipe.dcm")
    (source / "empty").mkdir()
    entries = _entries(source)
    assert len(entries) == 12

    result = cleanroom(
        "deid",
        str(source),
        str(tmp_path / "out"),
        "--method",
        "anonymize",
        "--report",
        str(tmp_path / "r.json"),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    places = {
        "kept": [k["item"] for k in report["kept"]],
        "quarantined": [i["item"] for i in report["items"]],
        "skipped": [s["item"] for s in report["skipped"]],
        "failed": [f["item"] for f in report["failed"]],
    }
    named = [item for items in places.values() for item in items]
    assert sorted(named) == sorted(entries), places  # each entry once, none left out
    reasons = {i["item"]: i["reason"] for i in report["items"] + report["skipped"]}
    assert reasons["dangling.dcm"] == "DanglingLink"
    assert reasons["loop-1"] == reasons["loop-2"] == reasons["sub/up"] == "SymlinkLoop"
    assert reasons["pipe.dcm"] == "NotARegularFile"
    assert reasons["empty/"] == "EmptyDirectory"
    assert reasons["notes.txt"] == "NotDicom"
    duplicate = next(i for i in report["items"] if i["reason"] == "DuplicateInstance")
    kept_twin = {"dup-1.dcm", "dup-2.dcm"} - {duplicate["item"]}
    assert kept_twin.pop() in duplicate["detail"]
    # The summary counts what is on disk: a.dcm and its link are one instance (a duplicate too).
    written = sorted((tmp_path / "out").rglob("*.dcm"))
    assert f"kept {len(written)} files" in result.stdout
    assert len(written) == len(report["kept"]) == 3


def test_a_non_empty_output_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.dcm").write_bytes(b"x")
    result = cleanroom("deid", str(tmp_path / "in"), str(tmp_path / "out"), "--method", "anonymize")
    assert result.returncode == 2 and "not an empty directory" in result.stderr


def test_a_worker_killed_mid_run_does_not_hang_the_command(tmp_path: Path) -> None:
    source = tmp_path / "in"
    for index in range(400):
        _ct(source / f"ct-{index:04d}.dcm", f"1.2.826.0.1.3680043.8.498.{index + 10}", index)
    command = subprocess.Popen(
        [
            *(sys.executable, "-m", "cleanroom.cli", "deid", str(source), str(tmp_path / "out")),
            *("--method", "anonymize", "--workers", "2", "--quiet", "--report", str(tmp_path / "r.json")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    parent = psutil.Process(command.pid)

    def workers() -> list[psutil.Process]:
        # A pool worker, not multiprocessing's resource tracker or fork server (their own helper processes,
        # which the out-of-memory killer does not pick and which the pool does not replace).
        found = []
        for child in parent.children():
            try:
                if not any(
                    helper in " ".join(child.cmdline()) for helper in ("resource_tracker", "forkserver")
                ):
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
        return found

    deadline = time.monotonic() + 60
    while not workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    victim = workers()[0]
    victim.send_signal(signal.SIGKILL)  # as the out-of-memory killer does
    try:
        stdout, stderr = command.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        command.kill()
        raise AssertionError("cleanroom deid hangs after one of its workers was killed") from None
    report = json.loads((tmp_path / "r.json").read_text())
    # The killed worker's files were tried again in a fresh pool: every file is accounted for.
    assert len(report["kept"]) + len(report["failed"]) + report["files"] == 400, stderr
    assert command.returncode == (1 if report["failed"] else 0), stdout + stderr
