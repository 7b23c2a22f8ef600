"""De-identification of whole files: bytes in, bytes out. Unreadable input is quarantined with the parser's reason."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
from pydicom.errors import InvalidDicomError

from cleanroom.deid.engine import DeidConfig, Kept, Quarantined, deidentify


@dataclass(frozen=True)
class CleanFile:
    """A de-identified file and the facts the snapshot manifest records about it."""

    data: bytes
    patient: str
    study: str
    series: str
    instance: str
    modality: str
    body_part: str

    @property
    def path(self) -> str:
        """Where the instance lives in a snapshot: patient/study/series/instance.dcm."""
        return f"{self.patient}/{self.study}/{self.series}/{self.instance}.dcm"


class _ShortReadDetector(io.BytesIO):
    """pydicom stops quietly where a file ends mid-element; a read that got some but not all of the bytes
    it asked for is the evidence that the file was cut (a whole file ends exactly between elements)."""

    cut_at: int | None = None

    def read(self, size: int | None = -1, /) -> bytes:
        position = self.tell()
        chunk = super().read(size)
        if size is not None and size > 0 and 0 < len(chunk) < size and self.cut_at is None:
            self.cut_at = position + len(chunk)
        return chunk


PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def truncation(dataset: pydicom.Dataset) -> str | None:
    """Why an image looks cut short, or None. pydicom stops quietly at the end of a short file, so an image
    header without pixels, or native pixels shorter than Rows x Columns x samples x frames, is the evidence."""
    if "Rows" not in dataset or "Columns" not in dataset:
        return None
    if not any(keyword in dataset for keyword in PIXEL_KEYWORDS):
        return "the image header has Rows and Columns but the file ends before its pixel data"
    syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    if "PixelData" in dataset and syntax is not None and not syntax.is_compressed:
        frames = int(dataset.get("NumberOfFrames") or 1)
        expected = (
            int(dataset.Rows)
            * int(dataset.Columns)
            * int(dataset.get("SamplesPerPixel", 1))
            * int(dataset.get("BitsAllocated", 8))
            * frames
            + 7
        ) // 8
        actual = len(dataset.PixelData)
        if actual < expected:
            return f"pixel data has {actual} bytes, the header promises {expected}"
    return None


def deidentify_bytes(data: bytes, config: DeidConfig) -> CleanFile | Quarantined:
    try:
        stream = _ShortReadDetector(data)
        dataset = pydicom.dcmread(stream)
        if stream.cut_at is not None:
            return Quarantined(
                "Unreadable", f"truncated file: it ends inside a data element at byte {stream.cut_at}"
            )
        # Touch every element now, so a truncated or corrupt file fails here rather than when written.
        dataset.walk(lambda _ds, _elem: None)
    except InvalidDicomError as error:
        return Quarantined("NotDicom", f"not a DICOM file: {error}")
    except Exception as error:
        return Quarantined("Unreadable", f"{type(error).__name__}: {error}")
    if "SOPInstanceUID" not in dataset or "SOPClassUID" not in dataset:
        return Quarantined("NotAnInstance", "no SOP Instance UID or SOP Class UID: not a composite instance")
    problem = truncation(dataset)
    if problem:
        return Quarantined("Unreadable", f"truncated file: {problem}")
    try:
        outcome = deidentify(dataset, config)
    except Exception as error:
        return Quarantined("DeidentificationFailed", f"{type(error).__name__}: {error}")
    if isinstance(outcome, Quarantined):
        return outcome
    assert isinstance(outcome, Kept)
    buffer = io.BytesIO()
    try:
        outcome.dataset.save_as(buffer, enforce_file_format=True)
    except Exception as error:
        return Quarantined("WriteFailed", f"{type(error).__name__}: {error}")
    return CleanFile(
        data=buffer.getvalue(),
        patient=outcome.patient,
        study=outcome.study,
        series=outcome.series,
        instance=outcome.instance,
        modality=outcome.modality,
        body_part=outcome.body_part,
    )
