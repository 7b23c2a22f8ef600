"""The arrays and inner byte buffers inside an exported file, decoded without running anything in it.

NumPy files are read with `allow_pickle=False`; PyTorch's zip format is read as a zip (its storages are
raw bytes; `data.pkl` is never unpickled, so tensor shapes are unknown and storages are compared by their
bytes); SafeTensors and NIfTI headers are parsed here; PNG and JPEG go through Pillow with its
decompression-bomb limit. What cannot be inspected is said in ``problems``, and the checks fail closed
on it: a file nobody could look into does not leave.
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cleanroom.airlock.filetypes import Kind, safetensors_header
from cleanroom.api import ExportFileType

AnyArray = npt.NDArray[np.generic]
# The most bytes one file may inflate to (zip members, gzip), and the most pixels one image may decode to.
DEFAULT_INFLATE_LIMIT = 1 << 30
# NIfTI-1 datatype codes (nifti1.h) and SafeTensors dtypes, as numpy dtypes.
_NIFTI_DTYPES = {
    2: "u1",
    4: "i2",
    8: "i4",
    16: "f4",
    64: "f8",
    256: "i1",
    512: "u2",
    768: "u4",
    1024: "i8",
    1280: "u8",
}
_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "U16": "<u2",
    "U32": "<u4",
    "U64": "<u8",
    "BOOL": "?",
}


@dataclass
class Contents:
    """What was found inside a file: decoded arrays by name, inner byte buffers by name (zip members, a
    gzip payload, tensor storages), and what could not be inspected."""

    arrays: list[tuple[str, AnyArray]] = field(default_factory=list)
    buffers: list[tuple[str, bytes]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = []
        if self.arrays:
            parts.append(f"{len(self.arrays)} array{'s' if len(self.arrays) != 1 else ''}")
        if self.buffers:
            parts.append(f"{len(self.buffers)} inner buffer{'s' if len(self.buffers) != 1 else ''}")
        return ", ".join(parts) or "no arrays"


def decode(data: bytes, kind: Kind, inflate_limit: int = DEFAULT_INFLATE_LIMIT) -> Contents:
    """The arrays and buffers of a file of ``kind``; never raises on hostile input (problems say why)."""
    contents = Contents()
    try:
        if kind == ExportFileType.NUMPY:
            _numpy(data, contents, inflate_limit)
        elif kind == ExportFileType.NIFTI:
            _nifti(data, contents, inflate_limit)
        elif kind == ExportFileType.SAFETENSORS:
            _safetensors(data, contents)
        elif kind == ExportFileType.PYTORCH:
            _pytorch(data, contents, inflate_limit)
        elif kind in (ExportFileType.PNG, ExportFileType.JPEG):
            _image(data, contents, inflate_limit)
        elif kind == ExportFileType.PDF and b"/Image" in data:
            contents.problems.append(
                "holds embedded images, which are not inspected: export the figure as PNG"
            )
    except Exception as error:  # hostile bytes may break any parser: the file is then not inspectable
        contents.problems.append(f"could not be decoded as {kind}: {type(error).__name__}: {error}"[:300])
    return contents


def _members(data: bytes, inflate_limit: int) -> Iterator[tuple[str, bytes]]:
    """A zip's members, refusing one whose members inflate past the limit (a zip bomb)."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    infos = archive.infolist()
    total = sum(info.file_size for info in infos)
    if total > inflate_limit:
        raise ValueError(f"members inflate to {total} bytes, over the {inflate_limit}-byte limit")
    for info in infos:
        if not info.is_dir():
            yield info.filename, archive.read(info)


def _numpy(data: bytes, contents: Contents, inflate_limit: int) -> None:
    if data.startswith(b"PK"):
        for name, member in _members(data, inflate_limit):
            contents.buffers.append((name, member))
            contents.arrays.append((name.removesuffix(".npy"), _npy(member)))
    else:
        contents.arrays.append(("array", _npy(data)))


def _npy(data: bytes) -> AnyArray:
    array: AnyArray = np.load(io.BytesIO(data), allow_pickle=False)
    return array


def _nifti(data: bytes, contents: Contents, inflate_limit: int) -> None:
    if data.startswith(b"\x1f\x8b"):
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            data = stream.read(inflate_limit + 1)
        if len(data) > inflate_limit:
            raise ValueError(f"inflates past the {inflate_limit}-byte limit")
        contents.buffers.append(("payload", data))
    order = "<" if struct.unpack("<i", data[:4])[0] in (348, 540) else ">"
    if struct.unpack(f"{order}i", data[:4])[0] == 348:
        dims = struct.unpack(f"{order}8h", data[40:56])
        (code,) = struct.unpack(f"{order}h", data[70:72])
        (offset,) = struct.unpack(f"{order}f", data[108:112])
    else:
        dims = struct.unpack(f"{order}8q", data[16:80])
        (code,) = struct.unpack(f"{order}h", data[12:14])
        (offset,) = struct.unpack(f"{order}q", data[168:176])
    if code not in _NIFTI_DTYPES or not 1 <= dims[0] <= 7:
        raise ValueError(f"NIfTI datatype {code} or dimensions {dims[0]} not supported")
    shape = tuple(int(n) for n in dims[1 : 1 + dims[0]])
    dtype = np.dtype(order + _NIFTI_DTYPES[code])
    count = int(np.prod(shape))
    voxels = np.frombuffer(data, dtype=dtype, count=count, offset=int(offset))
    # NIfTI stores the first index fastest (Fortran order).
    contents.arrays.append(("volume", voxels.reshape(shape, order="F")))


def _safetensors(data: bytes, contents: Contents) -> None:
    header = safetensors_header(data) or {}
    (length,) = struct.unpack("<Q", data[:8])
    body = data[8 + length :]
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        start, end = (int(n) for n in entry["data_offsets"])
        raw = body[start:end]
        contents.buffers.append((name, raw))
        dtype = _SAFETENSORS_DTYPES.get(str(entry.get("dtype")))
        if dtype is None:
            # bfloat16 and float8 have no numpy dtype: the tensor is compared by its bytes only.
            continue
        shape = tuple(int(n) for n in entry.get("shape", ()))
        contents.arrays.append((name, np.frombuffer(raw, dtype=dtype).reshape(shape)))


def _pytorch(data: bytes, contents: Contents, inflate_limit: int) -> None:
    for name, member in _members(data, inflate_limit):
        # archive/data/<n> are tensor storages (raw little-endian bytes); data.pkl describes them and is
        # never unpickled (unpickling runs code), so it is scanned as bytes only.
        contents.buffers.append((name, member))


def _image(data: bytes, contents: Contents, inflate_limit: int) -> None:
    try:
        from PIL import Image, ImageSequence
    except ImportError:
        contents.problems.append("Pillow is not installed, so the image was not decoded")
        return
    Image.MAX_IMAGE_PIXELS = inflate_limit // 4
    with Image.open(io.BytesIO(data)) as image:
        for index, frame in enumerate(ImageSequence.Iterator(image)):
            if index >= 64:
                contents.problems.append("more than 64 frames: the rest were not decoded")
                break
            pixels = np.asarray(_plain(frame))
            contents.arrays.append((f"frame {index}" if index else "image", pixels))


def _plain(frame: Any) -> Any:
    """A frame in a mode whose pixels are intensities: palettes and odd modes become RGB, 16-bit grey I."""
    if frame.mode.startswith("I;16"):
        return frame.convert("I")
    if frame.mode not in ("L", "RGB", "RGBA", "I", "F"):
        return frame.convert("RGB")
    return frame
