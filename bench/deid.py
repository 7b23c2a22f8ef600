"""De-identification throughput, side by side in one run: cp, pydicom read+write (the ceiling of one
pydicom process), peer tools (dicognito, dicom-anonymizer, deid, dcmanon) when their venv exists, and
cleanroom (one worker and every core). Prints files/s, MB/s and ratios, and counts planted-token leaks.

    .venv/bin/python bench/deid.py [--ct-files 400]

Peers are installed once, outside the project, by `hack/bench-venv.sh` (~/.cache/cleanroom/bench-venv).
Each tool runs in its own process and times its own loop, so interpreter start-up is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.dicom_samples import pydicom_test_files  # noqa: E402

CACHE = Path(os.environ.get("CLEANROOM_CACHE", Path.home() / ".cache/cleanroom"))
PEERS = CACHE / "bench-venv/bin/python"
PROJECT = ROOT / ".venv/bin/python"
TOKENS = [b"Zorgbrecht", b"Wilhelmina", b"MRN77341", b"Bakkerveld"]

HARNESS = """
import json, os, sys, time, warnings
warnings.simplefilter("ignore")
src_dir, dst_dir = sys.argv[1], sys.argv[2]
pairs = [(os.path.join(src_dir, n), os.path.join(dst_dir, n)) for n in sorted(os.listdir(src_dir))]
{setup}
failed = 0
started = time.perf_counter()
for src, dst in pairs:
    try:
{body}
    except Exception:
        failed += 1
print(json.dumps({{"seconds": time.perf_counter() - started, "failed": failed}}))
"""

# Each tool: (setup once, per-file body using src and dst).
TOOLS = {
    "pydicom read+write": ("import pydicom", "pydicom.dcmread(src).save_as(dst)"),
    "dicognito": (
        "import pydicom\nfrom dicognito.anonymizer import Anonymizer\nanonymizer = Anonymizer()",
        "ds = pydicom.dcmread(src)\nanonymizer.anonymize(ds)\nds.save_as(dst)",
    ),
    "dicom-anonymizer": (
        "from dicomanonymizer import anonymize_dicom_file",
        "anonymize_dicom_file(src, dst)",
    ),
    "deid": (
        "from deid.dicom import replace_identifiers",
        "(ds,) = replace_identifiers(dicom_files=[src], save=False, remove_private=True)\nds.save_as(dst)",
    ),
    "dcmanon": (
        "from dcmanon import Anonymizer\nanonymizer = Anonymizer()",
        "open(dst, 'wb').write(bytes(anonymizer.anonymize(src)))",
    ),
}

CLEANROOM = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
from cleanroom.api import DeidentificationMethod
from cleanroom.deid import DeidConfig, Keyring
from cleanroom.ingest import DirectorySink, run
from cleanroom.sources import DirectoryReader
reader = DirectoryReader(sys.argv[1])
items = reader.items()
started = time.perf_counter()
result = run(reader, items, DeidConfig(DeidentificationMethod.ANONYMIZE, Keyring.random()),
             DirectorySink(sys.argv[2]), workers=int(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - started, "failed": len(result.failed),
                  "quarantined": len(result.quarantined)}))
"""


def build_ct_corpus(directory: Path, count: int) -> None:
    """``count`` 512x512 16-bit CT slices over 2 patients, with planted identifiers."""
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


def _timed(command: list[str], name: str) -> tuple[float, int] | None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else str(result.returncode)
        print(f"  {name}: failed: {last}")
        return None
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return float(report["seconds"]), int(report.get("failed", 0))


def run_snippet(python: Path, name: str, source: Path, target: Path) -> tuple[float, int] | None:
    setup, body = TOOLS[name]
    code = HARNESS.format(setup=setup, body=textwrap.indent(body, " " * 8))
    return _timed([str(python), "-c", code, str(source), str(target)], name)


def run_cleanroom(source: Path, target: Path, workers: int) -> tuple[float, int] | None:
    return _timed([str(PROJECT), "-c", CLEANROOM, str(source), str(target), str(workers)], "cleanroom")


def bench(corpus: str, source: Path, work: Path) -> None:
    files = sorted(p for p in source.iterdir() if p.is_file())
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    print(f"\n{corpus}: {len(files)} files, {size_mb:.0f} MB")
    results: dict[str, tuple[float, int | None]] = {}
    failures: dict[str, int] = {}

    def fresh(name: str) -> Path:
        target = work / corpus / name.replace(" ", "_").replace("+", "_")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        return target

    target = fresh("cp")
    started = time.perf_counter()
    subprocess.run(["cp", "-r", f"{source}/.", str(target)], check=True)
    results["cp"] = (time.perf_counter() - started, None)
    target = fresh("pydicom")
    timed = run_snippet(PROJECT, "pydicom read+write", source, target)
    if timed:
        results["pydicom read+write"] = (timed[0], None)
        failures["pydicom read+write"] = timed[1]
    if PEERS.exists():
        for peer in ("dicognito", "dicom-anonymizer", "deid", "dcmanon"):
            target = fresh(peer)
            timed = run_snippet(PEERS, peer, source, target)
            if timed:
                results[peer] = (timed[0], leaks(target))
                failures[peer] = timed[1]
    else:
        print(f"  peers skipped: {PEERS} missing (run hack/bench-venv.sh)")
    for workers in (1, os.cpu_count() or 1):
        target = fresh(f"cleanroom-{workers}")
        timed = run_cleanroom(source, target, workers)
        if timed:
            name = f"cleanroom ({workers} worker{'s' if workers > 1 else ''})"
            results[name] = (timed[0], leaks(target))
            failures[name] = timed[1]

    peers = [
        name
        for name in results
        if name not in ("cp", "pydicom read+write") and not name.startswith("cleanroom")
    ]
    fastest_peer = min(peers, key=lambda n: results[n][0]) if peers else None
    print(
        f"  {'tool':28} {'seconds':>8} {'files/s':>8} {'MB/s':>7} {'vs pydicom':>10} {'vs fastest peer':>16}"
        f" {'leaks':>6} {'errors':>6}"
    )
    for name, (seconds, leaked) in results.items():
        rate = len(files) / seconds
        vs_pydicom = (
            results["pydicom read+write"][0] / seconds if "pydicom read+write" in results else float("nan")
        )
        vs_peer = results[fastest_peer][0] / seconds if fastest_peer else float("nan")
        print(
            f"  {name:28} {seconds:8.2f} {rate:8.0f} {size_mb / seconds:7.1f} {vs_pydicom:9.2f}x {vs_peer:15.2f}x "
            f"{'-' if leaked is None else leaked:>6} {failures.get(name, 0):>6}"
        )
    if fastest_peer:
        print(f"  fastest peer: {fastest_peer}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct-files", type=int, default=400)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cleanroom-bench")
    args = parser.parse_args()
    corpora = CACHE / "bench-corpora"
    build_ct_corpus(corpora / f"ct-{args.ct_files}", args.ct_files)
    build_mixed_corpus(corpora / "pydicom-mixed")
    print(
        "errors: files a tool raised on (skipped, not counted out of the time); leaks: outputs holding a planted"
    )
    print("identifier; cleanroom quarantines what it cannot clean, so its output never holds one.")
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; pydicom {pydicom.__version__}")
    bench(f"ct-{args.ct_files}", corpora / f"ct-{args.ct_files}", args.work)
    bench("pydicom-mixed", corpora / "pydicom-mixed", args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
