"""What a file is, judged by its bytes, never by its name: a DICOM file renamed `.npy` is DICOM.

Pure. Each sniff reads only fixed headers (magic numbers, the SafeTensors header length, the NIfTI header
size, a zip's member names); decoding belongs to `airlock.arrays`.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile

from cleanroom.api import ExportFileType

DICOM = "DICOM"
UNKNOWN = "Unknown"
# What a file may be: an ExportFileType, DICOM (never exportable) or Unknown (never exportable).
Kind = ExportFileType | str

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_PDF = b"%PDF-"
_NUMPY = b"\x93NUMPY"
_ZIP = b"PK\x03\x04"
_GZIP = b"\x1f\x8b"
# PS3.10 7.1: a 128-byte preamble, then the four bytes "DICM".
DICOM_MAGIC_OFFSET = 128
# The most a gzip member is inflated to while sniffing (a NIfTI header is 348 bytes).
_SNIFF_INFLATE = 4096


def has_dicom_magic(data: bytes) -> bool:
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def sniff(data: bytes, name: str = "") -> Kind:
    """The file's type. ``name`` only tells CSV from other text (their difference is not a disclosure)."""
    if has_dicom_magic(data):
        return DICOM
    if data.startswith(_PNG):
        return ExportFileType.PNG
    if data.startswith(_JPEG):
        return ExportFileType.JPEG
    if data.startswith(_PDF):
        return ExportFileType.PDF
    if data.startswith(_NUMPY):
        return ExportFileType.NUMPY
    if data.startswith(_ZIP):
        return _sniff_zip(data)
    if is_nifti_header(data):
        return ExportFileType.NIFTI
    if data.startswith(_GZIP):
        head = _inflate_head(data)
        if head is not None and is_nifti_header(head):
            return ExportFileType.NIFTI
        return UNKNOWN
    if is_safetensors(data):
        return ExportFileType.SAFETENSORS
    return _sniff_text(data, name)


def _sniff_zip(data: bytes) -> Kind:
    """NumPy's .npz (every member an .npy) or PyTorch's zip format (a data.pkl and its storages)."""
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, ValueError):
        return UNKNOWN
    if names and all(n.endswith(".npy") for n in names):
        return ExportFileType.NUMPY
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return ExportFileType.PYTORCH
    return UNKNOWN


def _inflate_head(data: bytes) -> bytes | None:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            return stream.read(_SNIFF_INFLATE)
    except (OSError, EOFError):
        return None


def is_nifti_header(data: bytes) -> bool:
    """NIfTI-1 (348-byte header, magic n+1 or ni1 at 344) or NIfTI-2 (540 bytes, magic n+2 or ni2 at 4),
    in either byte order."""
    if len(data) >= 348 and _header_size(data, 348) and data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return True
    return len(data) >= 540 and _header_size(data, 540) and data[4:8] in (b"n+2\x00", b"ni2\x00")


def _header_size(data: bytes, size: int) -> bool:
    return size in (struct.unpack("<i", data[:4])[0], struct.unpack(">i", data[:4])[0])


def safetensors_header(data: bytes) -> dict[str, object] | None:
    """The JSON header of a SafeTensors file (8-byte little-endian length, then that much JSON), or None."""
    if len(data) < 10:
        return None
    (length,) = struct.unpack("<Q", data[:8])
    if length < 2 or 8 + length > len(data) or data[8:9] != b"{":
        return None
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def is_safetensors(data: bytes) -> bool:
    return safetensors_header(data) is not None


def _sniff_text(data: bytes, name: str) -> Kind:
    if b"\x00" in data:
        return UNKNOWN
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return UNKNOWN
    lowered = name.lower()
    if lowered.endswith((".csv", ".tsv")):
        return ExportFileType.CSV
    if lowered.endswith(".json"):
        try:
            json.loads(text)
        except ValueError:
            return ExportFileType.TEXT
        return ExportFileType.JSON
    return ExportFileType.TEXT
