"""De-identification as a user waits for it: whole commands, process start to the last file written, side by
side in one run. On each corpus: `cp -r` (the floor), the peer tools (dcmanon's Rust command line and its
Python binding, dicognito, dicom-anonymizer, deid) when installed, `cleanroom deid`, and the operator's
ingest (S3 source to S3 snapshot store, manifest last) against a local S3 server. The commands take turns,
run after run, so a ratio compares runs made under the same load; medians are quoted.

    .venv/bin/python bench/deid.py [--ct-files 400 --ct-files 4000] [--runs 5] [--only NAME ...] [--before DIR]

Peers are installed once, outside the project, by `hack/bench-venv.sh` (~/.cache/cleanroom/bench-venv). The
ingest needs the local stack's S3 server binary (versitygw, built by `make cluster-up`); this script starts
its own on a free port over a scratch directory. A tool more than SLOW times slower than the fastest peer in
the warm-up run is timed in that run only (it cannot be the fastest peer, and deid takes minutes).
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.dicom_samples import pydicom_test_files  # noqa: E402

CACHE = Path(os.environ.get("CLEANROOM_CACHE", Path.home() / ".cache/cleanroom"))
PEERS = CACHE / "bench-venv/bin"
PROJECT = ROOT / ".venv/bin"
VERSITYGW = sorted(CACHE.glob("bin/versitygw-*/versitygw"))
TOKENS = [b"Zorgbrecht", b"Wilhelmina", b"MRN77341", b"Bakkerveld"]
SLOW = 4.0

# dcmanon's Python binding has no command of its own: this is the loop a user writes around it.
DCMANON_PY = """
import os, sys
from dcmanon import Anonymizer
source, target = sys.argv[1], sys.argv[2]
anonymizer = Anonymizer()
for name in sorted(os.listdir(source)):
    data = anonymizer.anonymize(os.path.join(source, name))
    with open(os.path.join(target, name), "wb") as out:
        out.write(bytes(data))
"""

PYDICOM_RW = """
import os, sys
import pydicom
source, target = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(source)):
    pydicom.dcmread(os.path.join(source, name)).save_as(os.path.join(target, name))
"""

# What the operator does for a Dataset with an S3 source (handlers.dataset.reconcile_dataset without the
# Kubernetes status writes): list, de-identify in worker processes into the snapshot store, publish the
# manifest last. It runs in a thread beside the main one, as kopf runs a handler, so the pool starts its
# workers the way it does in the operator.
INGEST = """
import os, sys, threading
from cleanroom import config
from cleanroom.api import DeidentificationMethod
from cleanroom.deid import DeidConfig, Keyring
from cleanroom.ingest import StoreSink, publish, run
from cleanroom.snapshots import SnapshotStore
from cleanroom.sources import S3Reader

def ingest():
    endpoint, access, secret, source, dataset = sys.argv[1:6]
    store = SnapshotStore(config.snapshot_location())
    store.ensure_bucket()
    reader = S3Reader(endpoint, source, "", "", access, secret)
    deid = DeidConfig(DeidentificationMethod.ANONYMIZE, Keyring.random())
    result = run(reader, reader.items(), deid, StoreSink(store.location), workers=config.ingest_workers())
    assert not result.failed, result.failed[:3]
    publish(store, dataset=dataset, result=result, reader=reader, config=deid, origin={})
    print(len(result.files), len(result.quarantined))

thread = threading.Thread(target=ingest)
thread.start()
thread.join()
"""


def build_ct_corpus(directory: Path, count: int) -> None:
    """``count`` 512x512 16-bit CT slices (Explicit VR Little Endian, ISO_IR 100) over 2 patients, with
    planted identifiers."""
    if directory.exists() and len(list(directory.iterdir())) == count:
        return
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    template.Rows = template.Columns = 512
    template.BitsAllocated, template.BitsStored, template.HighBit = 16, 16, 15
    for patient in range(2):
        study, series = generate_uid(), generate_uid()
        for index in range(count // 2):
            ds = template.copy()
            ds.PatientName = f"Zorgbrecht^Wilhelmina{patient}"
            ds.PatientID = f"MRN77341{patient}"
            ds.ReferringPhysicianName = "Bakkerveld^Jan"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = index + 1
            ds.PixelData = os.urandom(512 * 512 * 2)
            ds.save_as(directory / f"p{patient}-{index:04d}.dcm", enforce_file_format=True)


def build_mixed_corpus(directory: Path) -> None:
    """Every pydicom test file that reads, flattened into one directory."""
    if directory.exists() and any(directory.iterdir()):
        return
    directory.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(pydicom_test_files()):
        try:
            pydicom.dcmread(path)
        except Exception:
            continue
        shutil.copy(path, directory / f"{index:03d}-{Path(path).name}")


def leaks(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file() and any(t in p.read_bytes() for t in TOKENS))


def outputs(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file())


@dataclass
class Tool:
    """A command to time: ``command(source, target)`` gives its argv; ``make_target``: the command wants its
    output directory to exist. A slow tool keeps its warm-up figure only."""

    name: str
    command: Callable[[Path, Path], list[str]]
    peer: bool = True
    make_target: bool = True
    # Whether a slow run may stand for it (peers and the pydicom floor; never cleanroom's own commands).
    skippable: bool = True
    env: dict[str, str] = field(default_factory=dict)
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    warm: tuple[float, float] | None = None
    slow: bool = False
    # Where the command's output lands when it is not the target directory (the ingest's store bucket).
    result_dir: Path | None = None
    written: int | None = None
    leaked: int | None = None
    failed: str = ""


def command_env(tool: Tool) -> dict[str, str]:
    """The environment a command runs in: Python writes and reads compiled bytecode, as an installed package
    has it (pip compiles a wheel's modules on install; the peers' are), kept outside the tree. A session that
    sets PYTHONDONTWRITEBYTECODE would otherwise have `cleanroom` (installed editable) compile every one of
    its modules from source on every run: 0.1 s of CPU a command that no user pays twice."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(CACHE / "bench-pycache")
    return {**env, **tool.env}


def run_tool(tool: Tool, source: Path, target: Path) -> tuple[float, float] | None:
    """Wall and CPU seconds (the command's own and its children's) of one whole command; None if it failed."""
    shutil.rmtree(target, ignore_errors=True)
    if tool.make_target:
        target.mkdir(parents=True)
    argv = tool.command(source, target)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=command_env(tool))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        stderr = process.stderr.decode(errors="replace").strip()
        tool.failed = (stderr.splitlines()[-1] if stderr else f"exit {process.returncode}")[:160]
        return None
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cleanroom_deid(before: Path | None = None) -> Tool:
    """`cleanroom deid`; with ``before``, the same command from another tree's operator/ (an older commit's:
    `git archive REV operator | tar -x -C DIR`), timed in the same run."""
    return Tool(
        "cleanroom deid" + (" (before)" if before else ""),
        lambda s, t: [
            str(PROJECT / "cleanroom"),
            "deid",
            "--method",
            "anonymize",
            "--quiet",
            str(s),
            str(t),
        ],
        peer=False,
        make_target=False,
        skippable=False,
        env={"PYTHONPATH": str(before / "operator")} if before else {},
    )


def tools(s3: S3Server | None, before: Path | None = None) -> list[Tool]:
    found = [Tool("cp -r (floor)", lambda s, t: ["cp", "-r", f"{s}/.", str(t)], peer=False, skippable=False)]
    if (PEERS / "dcmanon").exists():
        found.append(
            Tool(
                "dcmanon (Rust CLI)",
                lambda s, t: [str(PEERS / "dcmanon"), "anonymize", "-i", str(s), "-o", str(t)],
            )
        )
    if (PEERS / "python").exists():
        python = str(PEERS / "python")
        found += [
            Tool("dcmanon (Python loop)", lambda s, t: [python, "-c", DCMANON_PY, str(s), str(t)]),
            Tool("dicognito", lambda s, t: [python, "-m", "dicognito", "--quiet", "-o", str(t), str(s)]),
            Tool("dicom-anonymizer", lambda s, t: [str(PEERS / "dicom-anonymizer"), str(s), str(t)]),
            Tool(
                "deid",
                lambda s, t: [
                    str(PEERS / "deid"),
                    "--quiet",
                    "--outfolder",
                    str(t),
                    "identifiers",
                    "--input",
                    str(s),
                    "--action",
                    "all",
                ],
            ),
        ]
    found.append(
        Tool(
            "pydicom read+write",
            lambda s, t: [str(PROJECT / "python"), "-c", PYDICOM_RW, str(s), str(t)],
            peer=False,
        )
    )
    found.append(cleanroom_deid())
    if before is not None:
        found.append(cleanroom_deid(before))
    if s3 is not None:
        found.append(s3.tool())
    return found


class S3Server:
    """A versitygw of this script's own over a scratch directory (the stack's flags, and keep-alive unless
    --s3-closes-connections), with the corpus uploaded to a source bucket once; each ingest run publishes into
    a fresh store bucket."""

    def __init__(self, binary: Path, directory: Path, keep_alive: bool = True) -> None:
        self.directory = directory
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "data").mkdir(parents=True)
        (directory / "versions").mkdir()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.access, self.secret = "bench", "bench-secret-key"
        self.process = subprocess.Popen(
            [
                str(binary),
                "--access",
                self.access,
                "--secret",
                self.secret,
                "--port",
                f"127.0.0.1:{self.port}",
                # A store in production keeps connections open between requests; versitygw closes each one
                # unless told, and a new connection per request was most of the ingest's time here.
                *(["--keep-alive"] if keep_alive else []),
                "posix",
                "--versioning-dir",
                str(directory / "versions"),
                str(directory / "data"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        self.runs = 0
        self.source = ""

    def client(self) -> object:
        from minio import Minio

        return Minio(f"127.0.0.1:{self.port}", access_key=self.access, secret_key=self.secret, secure=False)

    def upload(self, corpus: str, source: Path) -> None:
        client = self.client()
        self.source = f"source-{corpus}"
        if not client.bucket_exists(self.source):  # type: ignore[attr-defined]
            client.make_bucket(self.source)  # type: ignore[attr-defined]
            for path in sorted(source.iterdir()):
                data = path.read_bytes()
                client.put_object(self.source, path.name, io.BytesIO(data), len(data))  # type: ignore[attr-defined]

    def tool(self) -> Tool:
        server = self

        def command(_source: Path, target: Path) -> list[str]:
            # A fresh store bucket each run (objects already stored would not be stored again).
            server.runs += 1
            bucket = f"store-{server.runs}"
            for old in (server.directory / "data").glob("store-*"):
                shutil.rmtree(old, ignore_errors=True)
            for old in (server.directory / "versions").glob("store-*"):
                shutil.rmtree(old, ignore_errors=True)
            tool.result_dir = server.directory / "data" / bucket / "objects"
            tool.env = {
                "CLEANROOM_SNAPSHOT_ENDPOINT": server.endpoint,
                "CLEANROOM_SNAPSHOT_BUCKET": bucket,
                "CLEANROOM_SNAPSHOT_ACCESS_KEY": server.access,
                "CLEANROOM_SNAPSHOT_SECRET_KEY": server.secret,
            }
            return [
                str(PROJECT / "python"),
                "-c",
                INGEST,
                server.endpoint,
                server.access,
                server.secret,
                server.source,
                "bench",
            ]

        tool = Tool("cleanroom ingest (S3 to S3)", command, peer=False, make_target=False, skippable=False)
        return tool

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def bench(
    corpus: str,
    source: Path,
    work: Path,
    runs: int,
    only: list[str],
    skip: list[str],
    s3: S3Server | None,
    before: Path | None = None,
) -> None:
    files = sorted(p for p in source.iterdir() if p.is_file())
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    load = os.getloadavg()
    print(
        f"\n{corpus}: {len(files)} files, {size_mb:.0f} MB; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    if s3 is not None:
        s3.upload(corpus, source)
    chosen = [
        t
        for t in tools(s3, before)
        if (not only or any(o.lower() in t.name.lower() for o in only))
        and not any(x.lower() == t.name.split()[0].lower() for x in skip)
    ]
    for round_ in range(runs + 1):
        # Run 0 is the warm-up (the page cache, and which tools are slow); the order turns each run so that no
        # command always follows the same one.
        order = chosen[round_ % len(chosen) :] + chosen[: round_ % len(chosen)]
        for tool in order:
            if tool.failed or (round_ > 0 and tool.slow):
                continue
            target = work / corpus / "".join(c if c.isalnum() else "-" for c in tool.name)
            measured = run_tool(tool, source, target)
            if measured is None:
                continue
            if round_ == 0:
                result = tool.result_dir or target
                tool.written, tool.leaked, tool.warm = outputs(result), leaks(result), measured
            else:
                tool.walls.append(measured[0])
                tool.cpus.append(measured[1])
            shutil.rmtree(target, ignore_errors=True)
        if round_ == 0:
            peers = [t.warm[0] for t in chosen if t.peer and t.warm]
            for tool in chosen:
                if tool.skippable and peers and tool.warm and tool.warm[0] > SLOW * min(peers):
                    tool.slow = True
                    tool.walls, tool.cpus = [tool.warm[0]], [tool.warm[1]]
    report(chosen, len(files), size_mb)


def report(chosen: list[Tool], count: int, size_mb: float) -> None:
    timed_peers = [t for t in chosen if t.peer and t.walls]
    fastest = min(timed_peers, key=lambda t: statistics.median(t.walls)) if timed_peers else None
    print(
        f"  {'command':28} {'runs':>4} {'wall s (min-max)':>22} {'files/s':>8} {'MB/s':>7} {'cpu s':>6} "
        f"{'vs fastest peer':>15} {'files out':>9} {'leaks':>5}"
    )
    for tool in chosen:
        if tool.failed:
            print(f"  {tool.name:28} failed: {tool.failed}")
            continue
        if not tool.walls:
            continue
        wall = statistics.median(tool.walls)
        ratio = ""
        if fastest is not None and tool is not fastest:
            if len(tool.walls) == len(fastest.walls):
                ratio = (
                    f"{statistics.median(b / a for a, b in zip(tool.walls, fastest.walls, strict=True)):.2f}x"
                )
            else:
                ratio = f"{statistics.median(fastest.walls) / wall:.2f}x"
        spread = f"{wall:.3f} ({min(tool.walls):.2f}-{max(tool.walls):.2f})"
        print(
            f"  {tool.name:28} {len(tool.walls):4d} {spread:>22} {count / wall:8.0f} {size_mb / wall:7.1f} "
            f"{statistics.median(tool.cpus):6.2f} {ratio:>15} {tool.written if tool.written is not None else '-':>9} "
            f"{tool.leaked if tool.leaked is not None else '-':>5}"
        )
    if fastest is not None:
        print(f"  fastest peer: {fastest.name} (ratios: its wall over the command's, run by run, median)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ct-files", type=int, action="append", help="CT corpus sizes (default 400 and 4000)"
    )
    parser.add_argument("--runs", type=int, default=5, help="counted runs of each command (after a warm-up)")
    parser.add_argument("--mixed", action="store_true", help="also pydicom's test files (74 small, mixed)")
    parser.add_argument("--only", action="append", default=[], help="only commands whose name has this")
    parser.add_argument("--skip", action="append", default=[], help="leave out this tool (e.g. deid)")
    parser.add_argument(
        "--s3-closes-connections",
        action="store_true",
        help="run the S3 server as the local stack does (versitygw without --keep-alive)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="also time `cleanroom deid` from DIR/operator (git archive REV operator | tar -x -C DIR)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "cleanroom-bench",
        help="where outputs are written; /dev/shm/... (tmpfs) takes the disk's filesystem out of the figures",
    )
    args = parser.parse_args()
    corpora = CACHE / "bench-corpora"
    print("files out: what the command wrote; leaks: outputs holding a planted identifier.")
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; pydicom {pydicom.__version__}")
    s3 = S3Server(VERSITYGW[-1], args.work / "s3", not args.s3_closes_connections) if VERSITYGW else None
    if s3 is None:
        print(
            "  the operator's ingest is not timed: no versitygw under ~/.cache/cleanroom/bin (make cluster-up)"
        )
    try:
        wanted: list[tuple[str, Callable[[Path], object]]] = [
            (f"ct-{count}", functools.partial(build_ct_corpus, count=count))
            for count in args.ct_files or [400, 4000]
        ]
        if args.mixed:
            wanted.append(("pydicom-mixed", build_mixed_corpus))
        for name, build in wanted:
            build(corpora / name)
            bench(name, corpora / name, args.work, args.runs, args.only, args.skip, s3, args.before)
    finally:
        if s3 is not None:
            s3.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
