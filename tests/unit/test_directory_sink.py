"""The directory sink and reader of `cleanroom deid`: an output is whole or absent (a worker killed while
writing leaves nothing behind), never written over another, and the same on filesystems without unnamed
files; the reader reads a regular file whole, refuses one over the cap and one that stopped being a file."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleanroom.deid import CleanFile
from cleanroom.ingest import DirectorySink, pipeline
from cleanroom.ingest.pipeline import DuplicateInstance
from cleanroom.sources import DirectoryReader, SourceError, TooLarge


def clean_file(header: bytes = b"H" * 300, pixels: bytes = b"P" * 200_000) -> CleanFile:
    return CleanFile(
        parts=(header, memoryview(pixels)),
        patient="PAT",
        study="1.2",
        series="1.2.3",
        instance="1.2.3.4",
        modality="CT",
        body_part="",
    )


@pytest.fixture(params=["unnamed", "aside"])
def sink_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both ways of writing: an unnamed file linked into place, and (a filesystem without O_TMPFILE, such
    as some network ones) a hidden name linked into place."""
    if request.param == "aside":
        monkeypatch.setattr(pipeline, "_UNNAMED", False)
    else:
        assert pipeline._UNNAMED, "this machine should make unnamed files (Linux, /proc mounted)"
    yield request.param


def every_entry(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_the_file_is_written_whole_under_its_instance_path(tmp_path: Path, sink_mode: str) -> None:
    clean = clean_file()
    DirectorySink(str(tmp_path)).put(clean)
    assert (tmp_path / clean.path).read_bytes() == clean.data
    assert every_entry(tmp_path) == ["PAT", "PAT/1.2", "PAT/1.2/1.2.3", "PAT/1.2/1.2.3/1.2.3.4.dcm"]


def test_another_file_with_the_same_instance_is_refused_and_the_first_kept(
    tmp_path: Path, sink_mode: str
) -> None:
    first = clean_file()
    sink = DirectorySink(str(tmp_path))
    sink.put(first)
    sink.put(clean_file())  # the same bytes again (a batch retried): accepted, nothing changes
    with pytest.raises(DuplicateInstance):
        sink.put(clean_file(pixels=b"Q" * 200_000))
    assert (tmp_path / first.path).read_bytes() == first.data
    assert len(every_entry(tmp_path)) == 4  # no hidden file left beside it


def test_a_worker_killed_while_writing_leaves_no_file_behind(tmp_path: Path) -> None:
    """The out-of-memory killer can end a worker in the middle of a write. A half-written file under a hidden
    name would stay in the output for ever (and a partly written one under its own name would be taken for a
    clean instance); an unnamed file goes with the process."""
    pid = os.fork()
    if pid == 0:  # the worker: dies after the first half of the file is written
        try:

            def write_then_die(descriptor: int, parts: list[memoryview]) -> int:
                written = os.write(descriptor, parts[0])
                os.kill(os.getpid(), signal.SIGKILL)
                return written

            os.writev = write_then_die  # type: ignore[assignment]
            DirectorySink(str(tmp_path)).put(clean_file())
        finally:
            os._exit(3)  # never reached when the kill lands
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert every_entry(tmp_path) == ["PAT", "PAT/1.2", "PAT/1.2/1.2.3"]


def test_the_reader_reads_a_file_whole(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # larger than one read of a buffered file
    (tmp_path / "a.dcm").write_bytes(data)
    assert DirectoryReader(str(tmp_path)).read("a.dcm") == data
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert DirectoryReader(str(tmp_path)).read("empty.dcm") == b""


def test_the_reader_refuses_a_file_over_the_cap_unread(tmp_path: Path) -> None:
    (tmp_path / "big.dcm").write_bytes(b"x" * 1001)
    with pytest.raises(TooLarge):
        DirectoryReader(str(tmp_path)).read("big.dcm", limit=1000)
    assert DirectoryReader(str(tmp_path)).read("big.dcm", limit=1001) == b"x" * 1001


def test_the_reader_does_not_wait_on_an_entry_that_became_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "was-a-file.dcm")
    with pytest.raises(SourceError, match="no longer a regular file"):
        DirectoryReader(str(tmp_path)).read("was-a-file.dcm")
