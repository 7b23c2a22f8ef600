"""The airlock's disclosure checks, attacked with real files made from real DICOM: each way a modeller
could carry a scan out (the file renamed, a slice as an image or an array, downscaled, in a model file,
an identifier in text) is caught, and ordinary results (a CSV of metrics, model weights) pass."""

from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from cleanroom.airlock import ExportedFile, fingerprint_snapshot, fingerprints_from_json, passed, run_checks
from cleanroom.airlock.checks import (
    EXPORT_POLICY,
    NO_DICOM,
    NO_IDENTIFIERS,
    NO_SNAPSHOT_DATA,
    CheckResult,
)
from cleanroom.airlock.filetypes import sniff
from cleanroom.api import ExportFileType, ExportPolicy
from cleanroom.snapshots import content_digest

SNAPSHOT_FILES = ("CT_small.dcm", "MR_small.dcm")
POLICY = ExportPolicy(steward_group="stewards")


PSEUDONYM = "PSN-7QK2M9XW4HTR8JCN5B3D"


@pytest.fixture(scope="module")
def snapshot() -> dict[str, bytes]:
    """pydicom's CT and MR, the CT with a pseudonym as the de-identification gives one."""
    files = {name: Path(get_testdata_file(name)).read_bytes() for name in SNAPSHOT_FILES}
    dataset = pydicom.dcmread(io.BytesIO(files["CT_small.dcm"]))
    dataset.PatientID = dataset.PatientName = PSEUDONYM
    out = io.BytesIO()
    dataset.save_as(out)
    files["CT_small.dcm"] = out.getvalue()
    return files


@pytest.fixture(scope="module")
def fingerprints(snapshot: dict[str, bytes]):  # type: ignore[no-untyped-def]
    built = fingerprint_snapshot((path, content_digest(data), data) for path, data in snapshot.items())
    # What the operator keeps in the store and reads back must judge the same.
    return fingerprints_from_json(json.loads(json.dumps(built.to_json())))


def ct_slice(snapshot: dict[str, bytes]) -> np.ndarray:
    return pydicom.dcmread(io.BytesIO(snapshot["CT_small.dcm"])).pixel_array


def check(
    files: dict[str, bytes], fingerprints, policy: ExportPolicy = POLICY, **limits: int
) -> dict[str, CheckResult]:  # type: ignore[no-untyped-def]
    results = run_checks([ExportedFile(p, d) for p, d in files.items()], fingerprints, policy, **limits)
    return {r.name: r for r in results}


def details(result: CheckResult) -> str:
    return "\n".join(f"{f.file}: {f.detail}" for f in result.findings)


def to_png(array: np.ndarray) -> bytes:
    low, high = float(array.min()), float(array.max())
    grey = ((array.astype(np.float64) - low) / (high - low) * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(grey).save(out, format="PNG")
    return out.getvalue()


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def test_a_clean_csv_of_metrics_passes_every_check(fingerprints) -> None:  # type: ignore[no-untyped-def]
    csv = b"fold,dice,hausdorff95\n1,0.871,4.2\n2,0.858,4.9\n3,0.880,3.8\n"
    results = check({"results/metrics.csv": csv}, fingerprints)
    assert passed(list(results.values())), {n: details(r) for n, r in results.items()}
    # Each check says what it looked at.
    assert all(r.looked_at for r in results.values())
    assert "CSV" in " ".join(results[EXPORT_POLICY].looked_at)


def test_a_dicom_file_renamed_npy_is_caught(snapshot, fingerprints) -> None:  # type: ignore[no-untyped-def]
    results = check({"results/features.npy": snapshot["CT_small.dcm"]}, fingerprints)
    assert not results[NO_DICOM].passed
    assert "DICM magic" in details(results[NO_DICOM])
    assert "CT_small.dcm" in details(results[NO_SNAPSHOT_DATA])
    assert not results[EXPORT_POLICY].passed  # DICOM is never an allowed type


def test_dicom_without_its_preamble_is_caught_by_parsing(snapshot, fingerprints) -> None:  # type: ignore[no-untyped-def]
    stripped = snapshot["MR_small.dcm"][132:]  # no preamble, no DICM: only a parse finds it
    results = check({"notes.txt": stripped}, fingerprints)
    assert "parses as a DICOM data set" in details(results[NO_DICOM])


def test_a_dicom_file_inside_an_npz_is_caught(snapshot, fingerprints) -> None:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    np.savez(out, scan=np.frombuffer(snapshot["CT_small.dcm"], dtype=np.uint8))
    results = check({"bundle.npz": out.getvalue()}, fingerprints)
    assert not results[NO_DICOM].passed, results[NO_DICOM]
    assert not results[NO_SNAPSHOT_DATA].passed


def test_a_slice_saved_as_png_is_caught(snapshot, fingerprints) -> None:  # type: ignore[no-untyped-def]
    results = check({"figures/slice.png": to_png(ct_slice(snapshot))}, fingerprints)
    assert not results[NO_SNAPSHOT_DATA].passed
    assert "CT_small.dcm" in details(results[NO_SNAPSHOT_DATA])
    assert results[NO_DICOM].passed


def test_a_downscaled_slice_is_caught(snapshot, fingerprints) -> None:  # type: ignore[no-untyped-def]
    image = Image.open(io.BytesIO(to_png(ct_slice(snapshot))))
    small = io.BytesIO()
    image.resize((64, 64), Image.Resampling.BILINEAR).save(small, format="JPEG", quality=80)
    results = check(
        {"figures/thumbnail.jpg": small.getvalue()},
        fingerprints,
        ExportPolicy(allowed_types=(ExportFileType.JPEG,)),
    )
    assert not results[NO_SNAPSHOT_DATA].passed
    assert "downscaled, re-encoded or turned" in details(results[NO_SNAPSHOT_DATA])


def test_a_mirrored_and_turned_slice_is_caught(snapshot, fingerprints) -> None:  # type: ignore[no-untyped-def]
    turned = np.rot90(ct_slice(snapshot)[:, ::-1]).astype(np.float32) / 7.0
    results = check({"aug.npy": npy(turned)}, fingerprints)
    assert "looks like a frame of CT_small.dcm" in details(results[NO_SNAPSHOT_DATA])


def test_a_slice_as_a_float_array_in_hounsfield_units_is_caught(snapshot, fingerprints) -> None:  # type: ignore[no-untyped-def]
    dataset = pydicom.dcmread(io.BytesIO(snapshot["CT_small.dcm"]))
    hounsfield = pydicom.pixels.apply_modality_lut(dataset.pixel_array, dataset).astype(np.float32)
    results = check({"x.npy": npy(hounsfield)}, fingerprints)
    assert "has the pixel values of CT_small.dcm" in details(results[NO_SNAPSHOT_DATA])


def test_a_volume_of_slices_in_a_nifti_file_is_caught(snapshot, fingerprints) -> None:  # type: ignore[no-untyped-def]
    volume = np.stack([ct_slice(snapshot).T] * 3, axis=2)  # x, y, z as NIfTI stores them
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *volume.shape, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 4, 16)  # int16
    struct.pack_into("<f", header, 108, 352.0)
    header[344:348] = b"n+1\x00"
    nifti = gzip.compress(bytes(header) + volume.astype("<i2").tobytes(order="F"))
    assert sniff(nifti, "seg.nii.gz") == ExportFileType.NIFTI
    results = check({"seg.nii.gz": nifti}, fingerprints)
    assert not results[NO_SNAPSHOT_DATA].passed


def test_a_slice_in_a_safetensors_file_is_caught(snapshot, fingerprints) -> None:  # type: ignore[no-untyped-def]
    tensor = ct_slice(snapshot).astype("<f4")
    header = json.dumps(
        {"x": {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [0, tensor.nbytes]}}
    )
    data = struct.pack("<Q", len(header)) + header.encode() + tensor.tobytes()
    results = check({"model.safetensors": data}, fingerprints)
    assert "has the pixel values of CT_small.dcm" in details(results[NO_SNAPSHOT_DATA])


def test_a_stack_of_slices_in_a_pytorch_storage_is_caught(snapshot, fingerprints) -> None:  # type: ignore[no-untyped-def]
    # torch.save's zip format: data.pkl (never unpickled) and raw storages; here two slices in one storage.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("model/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr(
            "model/data/0", np.zeros((128, 128), np.int16).tobytes() + ct_slice(snapshot).tobytes()
        )
    assert sniff(out.getvalue(), "model.pt") == ExportFileType.PYTORCH
    results = check({"model.pt": out.getvalue()}, fingerprints)
    assert "holds the pixel data of CT_small.dcm" in details(results[NO_SNAPSHOT_DATA])


def test_a_text_file_with_a_snapshot_uid_is_caught(snapshot, fingerprints) -> None:  # type: ignore[no-untyped-def]
    uid = str(pydicom.dcmread(io.BytesIO(snapshot["MR_small.dcm"])).StudyInstanceUID)
    text = f"cases used for validation:\n{uid}.dcm\n".encode()
    results = check({"notes/cases.txt": text}, fingerprints)
    assert not results[NO_IDENTIFIERS].passed
    assert "StudyInstanceUID of MR_small.dcm" in details(results[NO_IDENTIFIERS])


def test_a_patient_id_in_a_string_array_is_caught(snapshot, fingerprints) -> None:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    np.savez(out, ids=np.array([PSEUDONYM, "other-case-0001"]))  # UTF-32 in the file: not in its bytes
    results = check({"ids.npz": out.getvalue()}, fingerprints)
    assert "the PatientID of CT_small.dcm" in details(results[NO_IDENTIFIERS])


def test_model_weights_and_a_plot_are_not_mistaken_for_scans(fingerprints) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    weights = rng.normal(size=(256, 256)).astype(np.float32)
    conv = rng.normal(size=(32, 16, 3, 3)).astype(np.float32)
    out = io.BytesIO()
    np.savez(out, fc=weights, conv=conv)
    x = np.linspace(0, 1, 200)
    plot = np.full((120, 200), 255, np.uint8)
    plot[(100 - 80 * x**0.5).astype(int), np.arange(200)] = 0
    results = check({"weights.npz": out.getvalue(), "loss.png": to_png(plot)}, fingerprints)
    assert passed(list(results.values())), {n: details(r) for n, r in results.items()}


def test_a_pickled_object_array_fails_closed(fingerprints) -> None:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    np.save(out, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    results = check({"obj.npy": out.getvalue()}, fingerprints)
    assert "could not be inspected" in details(results[NO_SNAPSHOT_DATA])


def test_a_zip_bomb_fails_closed(fingerprints) -> None:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.npy", npy(np.zeros(16 << 20, np.uint8)))
    assert len(out.getvalue()) < 100_000
    results = check({"bomb.npz": out.getvalue()}, fingerprints, inflate_limit=1 << 20)
    assert "over the 1048576-byte limit" in details(results[NO_SNAPSHOT_DATA])


def test_the_policy_limits_size_and_types(fingerprints) -> None:  # type: ignore[no-untyped-def]
    policy = ExportPolicy(max_bytes=10, allowed_types=(ExportFileType.CSV,))
    results = check(
        {"a.txt": b"hello world, more than ten bytes", "b.bin": b"\x00\x01\x02"}, fingerprints, policy
    )
    found = details(results[EXPORT_POLICY])
    assert "over the Dataset's limit of 10" in found
    assert "a.txt: Text is not a type" in found
    assert "b.bin: its type is not one that can be checked" in found
