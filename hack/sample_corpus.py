"""Builds the sample corpus for `make dev` from pydicom's bundled test files and uploads it to the local S3
server under s3://raw-imaging/sample/: three synthetic patients with CT and MR series, plus a secondary
capture with text in its pixels, which Clean Pixel Data quarantines. Idempotent (same object names each run)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pydicom
from minio import Minio
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
PATIENTS = [
    ("Doe^Jane", "P001", "19600101"),
    ("Roe^Richard", "P002", "19551212"),
    ("Poe^Edgar", "P003", "19490119"),
]


def build() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name, patient_id, birth in PATIENTS:
        study = generate_uid(entropy_srcs=[patient_id, "study"])
        for source, series_count in (("CT_small.dcm", 4), ("MR_small.dcm", 3)):
            series = generate_uid(entropy_srcs=[patient_id, source])
            for index in range(series_count):
                ds = pydicom.dcmread(get_testdata_file(source))
                ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, patient_id, birth
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
                ds.SOPInstanceUID = generate_uid(entropy_srcs=[patient_id, source, str(index)])
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.InstanceNumber = index + 1
                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                files[f"{patient_id}/{source.split('_')[0]}-{index + 1}.dcm"] = buffer.getvalue()
    # A screen capture with text in its pixels: Clean Pixel Data has no rule for it and its OCR check finds
    # the text (a capture without text would now be kept).
    files["P001/screenshot.dcm"] = Path(get_testdata_file("GDCMJ2K_TextGBR.dcm")).read_bytes()
    return files


def main(argv: list[str]) -> int:
    """Upload to the local S3 server (.cluster/s3.env), or to ENDPOINT ACCESS_KEY SECRET_KEY when given."""
    if len(argv) == 3:
        endpoint, access, secret = argv
    elif not argv:
        env = dict(
            line.split("=", 1) for line in (ROOT / ".cluster/s3.env").read_text().splitlines() if "=" in line
        )
        endpoint, access, secret = env["S3_ENDPOINT"], env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"]
    else:
        print("usage: sample_corpus.py [ENDPOINT ACCESS_KEY SECRET_KEY]", file=sys.stderr)
        return 2
    client = Minio(endpoint.split("://", 1)[1], access, secret, secure=False)
    if not client.bucket_exists("raw-imaging"):
        client.make_bucket("raw-imaging")
    files = build()
    for key, data in files.items():
        client.put_object("raw-imaging", f"sample/{key}", io.BytesIO(data), len(data))
    print(f"uploaded {len(files)} sample files to s3://raw-imaging/sample/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
