"""The ingest under faults: a source or store outage fails the run fast (nothing quarantined for it, nothing
published), a killed worker ends the run instead of hanging it, and memory stays bounded against
decompression bombs and files over the cap."""

from __future__ import annotations

import io
import os
import signal
import struct
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian

from cleanroom.api import DeidentificationMethod
from cleanroom.deid import CleanFile, DeidConfig, Keyring, deidentify_bytes
from cleanroom.ingest import (
    NOT_ATTEMPTED,
    SOURCE_UNREACHABLE,
    STORAGE_UNAVAILABLE,
    WORKER_DIED,
    DirectorySink,
    IngestResult,
    Limits,
    run,
)
from cleanroom.snapshots import FileEntry
from cleanroom.sources import DirectoryReader, SourceError

CONFIG = DeidConfig(DeidentificationMethod.PSEUDONYMIZE, Keyring(b"k" * 32), frozenset())
# Enough files that two workers run in a pool (run() keeps small jobs in one process).
POOL_ITEMS = 300


def ct_bytes(item: str) -> bytes:
    """A small CT whose SOP Instance UID is derived from ``item``."""
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.SOPInstanceUID = "1.2.826.0.1.3680043.8.498." + str(int.from_bytes(item.encode()[-12:], "big"))
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class FlakySource:
    """A source that answers until ``fail_from``, then times out on every read (as an unreachable server
    does, slowly)."""

    fail_from: int
    delay: float = 0.5

    def items(self) -> list[str]:
        return [f"f-{index:04d}" for index in range(POOL_ITEMS)]

    def skipped(self) -> list[object]:
        return []

    def read(self, item: str, limit: int = 1 << 30) -> bytes:
        if int(item[2:]) >= self.fail_from:
            time.sleep(self.delay)
            raise ConnectionError(f"connection to the source refused while reading {item}")
        return ct_bytes(item)

    def describe(self) -> dict[str, str]:
        return {"kind": "test", "location": "flaky"}


@dataclass(frozen=True)
class WorkerKiller:
    """A source whose read of ``victim`` kills the reading process with SIGKILL (as the OOM killer does);
    with ``once``, only the first time (a marker file remembers)."""

    victim: str
    marker: str = ""

    def items(self) -> list[str]:
        return [f"f-{index:04d}" for index in range(POOL_ITEMS)]

    def skipped(self) -> list[object]:
        return []

    def read(self, item: str, limit: int = 1 << 30) -> bytes:
        if item == self.victim and not (self.marker and Path(self.marker).exists()):
            if self.marker:
                Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return ct_bytes(item)

    def describe(self) -> dict[str, str]:
        return {"kind": "test", "location": "killer"}


@dataclass(frozen=True)
class DownStore:
    """A store that is down: every put times out."""

    delay: float = 0.5

    def put(self, clean: CleanFile) -> FileEntry:
        time.sleep(self.delay)
        raise ConnectionError("the snapshot store does not answer")


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail (rather than hang the suite) when a run does not end in 90 s."""

    def expired(*_: object) -> None:
        raise TimeoutError("the ingest run did not end: it hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(90)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def accounted(result: IngestResult) -> list[str]:
    """Every item the result names, once per place it appears."""
    return sorted(
        [*result.origins.values(), *(q.item for q in result.quarantined), *(f.item for f in result.failed)]
    )


def test_a_source_outage_fails_the_run_fast_and_quarantines_nothing(tmp_path: Path, deadline: None) -> None:
    source = FlakySource(fail_from=150)
    started = time.monotonic()
    result = run(source, source.items(), CONFIG, DirectorySink(str(tmp_path)), workers=2)
    elapsed = time.monotonic() - started
    # A read failure is the source's, not the file's: nothing is quarantined for it ...
    assert result.quarantined == []
    # ... the run fails with the outage named ...
    assert result.outage is not None and result.outage.reason == SOURCE_UNREACHABLE
    assert "connection to the source refused" in result.outage.detail
    # ... and stops at once (the breaker): 150 reads of 0.5 s each would take over a minute on 2 workers.
    assert elapsed < 20, f"the run took {elapsed:.0f}s to notice the outage"
    assert sum(1 for f in result.failed if f.reason == NOT_ATTEMPTED) > 100
    assert accounted(result) == source.items()


def test_a_store_outage_fails_the_run_fast(deadline: None) -> None:
    source = FlakySource(fail_from=POOL_ITEMS)
    started = time.monotonic()
    result = run(source, source.items(), CONFIG, DownStore(), workers=2)
    assert time.monotonic() - started < 20
    assert result.outage is not None and result.outage.reason == STORAGE_UNAVAILABLE
    assert result.files == [] and result.quarantined == []
    assert accounted(result) == source.items()


def test_an_outage_is_told_the_moment_the_breaker_trips(tmp_path: Path) -> None:
    told: list[str] = []
    source = FlakySource(fail_from=3, delay=0)
    result = run(
        source, source.items()[:10], CONFIG, DirectorySink(str(tmp_path)), workers=1, outage=told.append
    )
    assert len(told) == 1 and told[0].reason == SOURCE_UNREACHABLE  # type: ignore[attr-defined]
    assert [f.reason for f in result.failed] == [SOURCE_UNREACHABLE] + [NOT_ATTEMPTED] * 6


def test_a_worker_killed_for_good_fails_the_run_instead_of_hanging_it(tmp_path: Path, deadline: None) -> None:
    source = WorkerKiller("f-0100")
    result = run(source, source.items(), CONFIG, DirectorySink(str(tmp_path)), workers=2)
    assert result.outage is not None and result.outage.reason == WORKER_DIED
    assert "f-0100" in {f.item for f in result.failed}
    assert accounted(result) == source.items()


def test_a_worker_killed_once_is_replaced_and_its_files_done(tmp_path: Path, deadline: None) -> None:
    source = WorkerKiller("f-0100", marker=str(tmp_path / "killed-once"))
    result = run(source, source.items(), CONFIG, DirectorySink(str(tmp_path / "out")), workers=2)
    assert (tmp_path / "killed-once").exists()
    assert result.failed == []
    assert len(result.files) == POOL_ITEMS


def deflate_bomb(inflated: int) -> bytes:
    """A valid-looking Deflated Explicit VR Little Endian file whose data set inflates to ``inflated`` bytes
    (a CT header, then an OB element of zeros), built without ever holding the inflated bytes."""
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    whole = buffer.getvalue()
    meta = pydicom.dcmread(io.BytesIO(whole)).file_meta
    meta_buffer = io.BytesIO()
    pydicom.filewriter.write_file_meta_info(pydicom.filebase.DicomFileLike(meta_buffer), meta)
    head = b"\0" * 128 + b"DICM" + meta_buffer.getvalue()
    body = io.BytesIO()
    plain = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    pydicom.filewriter.write_dataset(
        pydicom.filebase.DicomFileLike(body), plain, pydicom.uid.ExplicitVRLittleEndian
    )
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunks = [compressor.compress(body.getvalue())]
    zeros_length = inflated - len(body.getvalue()) - 12
    chunks.append(compressor.compress(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, zeros_length)))
    block = bytes(1 << 20)
    for _ in range(zeros_length // len(block)):
        chunks.append(compressor.compress(block))
    chunks.append(compressor.compress(bytes(zeros_length % len(block))))
    chunks.append(compressor.flush())
    return head + b"".join(chunks)


def test_a_decompression_bomb_is_quarantined_within_the_memory_cap() -> None:
    bomb = deflate_bomb(512 << 20)
    assert len(bomb) < 1 << 20  # a 1 MB file ...
    cap = 16 << 20
    tracemalloc.start()
    try:
        outcome = deidentify_bytes(bomb, CONFIG, max_inflated_bytes=cap)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # ... that asks for 512 MB is refused having held a few megabytes, and says why.
    assert not isinstance(outcome, CleanFile)
    assert outcome.reason == "TooLarge" and "inflates to more than" in outcome.detail
    assert peak < 2 * cap, f"peak {peak >> 20} MiB"


def test_a_deflated_file_under_the_cap_is_still_cleaned() -> None:
    outcome = deidentify_bytes(deflate_bomb(2 << 20), CONFIG, max_inflated_bytes=16 << 20)
    assert isinstance(outcome, CleanFile), outcome


def test_a_file_over_the_cap_is_quarantined_unread(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "small.dcm").write_bytes(ct_bytes("small"))
    (source / "huge.dcm").write_bytes(ct_bytes("huge") + bytes(8 << 20))
    reader = DirectoryReader(str(source))
    tracemalloc.start()
    try:
        result = run(
            reader,
            reader.items(),
            CONFIG,
            DirectorySink(str(tmp_path / "out")),
            workers=1,
            limits=Limits(max_file_bytes=1 << 20, max_inflated_bytes=1 << 20),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(q.item, q.reason) for q in result.quarantined] == [("huge.dcm", "TooLarge")]
    assert "at most 1048576" in result.quarantined[0].detail
    assert list(result.origins.values()) == ["small.dcm"]
    assert peak < 4 << 20, f"peak {peak >> 20} MiB: the file over the cap was read"


def test_a_large_file_within_the_cap_stays_within_a_few_times_its_size(tmp_path: Path) -> None:
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.Rows, dataset.Columns = 4096, 4096
    dataset.PixelData = bytes(4096 * 4096 * 2)  # 32 MiB of 16-bit pixels
    dataset.save_as(tmp_path / "large.dcm")
    del dataset
    size = (tmp_path / "large.dcm").stat().st_size
    reader = DirectoryReader(str(tmp_path))
    tracemalloc.start()
    try:
        result = run(reader, ["large.dcm"], CONFIG, DirectorySink(str(tmp_path / "out")), workers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(result.files) == 1, result.quarantined
    assert peak < 3 * size, f"peak {peak >> 20} MiB for a {size >> 20} MiB file"


def test_an_unlistable_directory_is_the_sources_failure(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.dcm").write_bytes(b"x")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: permissions do not apply")
        with pytest.raises(SourceError, match="cannot list"):
            DirectoryReader(str(tmp_path)).items()
    finally:
        locked.chmod(0o755)


def test_the_dataset_says_which_outage_stopped_the_run(tmp_path: Path) -> None:
    from cleanroom.handlers.dataset import run_failure

    source = FlakySource(fail_from=3, delay=0)
    result = run(source, source.items()[:10], CONFIG, DirectorySink(str(tmp_path)), workers=1)
    failure = run_failure(result)
    assert failure is not None and failure.reason == SOURCE_UNREACHABLE
    assert "nothing was published" in str(failure) and "f-0003" in str(failure)
    assert run_failure(run(source, source.items()[:3], CONFIG, DirectorySink(str(tmp_path / "b")))) is None
