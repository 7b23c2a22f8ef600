"""De-identification of one whole file through pydicom and ``engine``: every file ``rewrite`` leaves (other
transfer syntaxes and character sets, files to quarantine, pixels that may show burned-in text), and the
reference ``rewrite`` is tested against. Imported only when a file needs it (it loads pydicom, and Clean
Pixel Data loads numpy and the OCR engine when a file's pixels are checked)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from cleanroom.deid import pixels, policy
from cleanroom.deid.clean_file import CleanFile, Quarantined
from cleanroom.deid.engine import Kept, burned_in_reason, deidentify
from cleanroom.deid.files import DEFAULT_MAX_INFLATED_BYTES, only_trailing_padding, pixel_element_end
from cleanroom.deid.ocr import TextFinder, installed_finder
from cleanroom.deid.pixel_rules import shipped_rules
from cleanroom.deid.policy import DeidConfig
from cleanroom.deid.rewrite import PREAMBLE


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


def expected_pixel_bytes(dataset: pydicom.Dataset) -> int | None:
    """Bytes of native pixel data the header promises, or None for compressed or non-image instances."""
    syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    if "Rows" not in dataset or "Columns" not in dataset or syntax is None or syntax.is_compressed:
        return None
    return policy.expected_pixel_bytes(
        int(dataset.Rows),
        int(dataset.Columns),
        int(dataset.get("SamplesPerPixel", 1)),
        int(dataset.get("BitsAllocated", 8)),
        int(dataset.get("NumberOfFrames") or 1),
    )


def truncation(dataset: pydicom.Dataset, pixel_bytes: int | None = None) -> str | None:
    """Why an image looks cut short, or None. pydicom stops quietly at the end of a short file, so an image
    header without pixels, or native pixels shorter than Rows x Columns x samples x frames, is the evidence.
    ``pixel_bytes`` is the pixel data length when it was not parsed into ``dataset``."""
    if "Rows" not in dataset or "Columns" not in dataset:
        return None
    if pixel_bytes is None:
        if not any(keyword in dataset for keyword in PIXEL_KEYWORDS):
            return "the image header has Rows and Columns but the file ends before its pixel data"
        if "PixelData" not in dataset:
            return None
        pixel_bytes = len(dataset.PixelData)
    expected = expected_pixel_bytes(dataset)
    if expected is not None and pixel_bytes < expected:
        return f"pixel data has {pixel_bytes} bytes, the header promises {expected}"
    return None


@dataclass(frozen=True)
class _Parsed:
    dataset: pydicom.Dataset
    # The pixel data element exactly as it was in the input, appended unchanged after the cleaned header;
    # empty when the whole file was parsed (no pixels, deflated, or elements after the pixels).
    pixel_tail: bytes = b""
    pixel_bytes: int | None = None


def _parse(data: bytes) -> _Parsed | Quarantined:
    """Parse the header only and keep the pixel data as raw bytes (never decoded, never re-encoded), or the
    whole file where the pixels cannot simply be carried over."""
    stream = _ShortReadDetector(data)
    dataset = pydicom.dcmread(stream, stop_before_pixels=True)
    if stream.cut_at is not None:
        return Quarantined(
            "Unreadable", f"truncated file: it ends inside a data element at byte {stream.cut_at}"
        )
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    implicit, little = dataset.original_encoding
    if (
        syntax is None
        or syntax.is_deflated
        or (syntax.is_implicit_VR, syntax.is_little_endian) != (implicit, little)
    ):
        # A deflated file is read from an inflated copy, so offsets into ``data`` mean nothing.
        return _parse_whole(data)
    tail = data[stream.tell() :]
    if not tail:
        return _Parsed(dataset)
    found = pixel_element_end(tail, bool(implicit), bool(little))
    if found is None:
        return Quarantined("Unreadable", "truncated file: the pixel data runs past the end of the file")
    end, length = found
    if end != len(tail) and not only_trailing_padding(tail[end:], bool(implicit), bool(little)):
        return _parse_whole(data)
    # Data Set Trailing Padding (FFFC,FFFC) has no meaning (PS3.10 7.2) and may hold anything: dropped.
    return _Parsed(dataset, tail[:end], length)


def _parse_whole(data: bytes) -> _Parsed | Quarantined:
    stream = _ShortReadDetector(data)
    dataset = pydicom.dcmread(stream)
    if stream.cut_at is not None:
        return Quarantined(
            "Unreadable", f"truncated file: it ends inside a data element at byte {stream.cut_at}"
        )
    return _Parsed(dataset)


def deidentify_with_pydicom(
    data: bytes, config: DeidConfig, max_pixel_bytes: int = DEFAULT_MAX_INFLATED_BYTES
) -> CleanFile | Quarantined:
    """De-identify one file through pydicom and ``engine``: every file ``rewrite`` leaves, and the reference
    ``rewrite`` is tested against. A file whose pixels may show burned-in text goes through Clean Pixel
    Data first (``deid.pixels``), its pixels decoded (at most ``max_pixel_bytes``) and checked by the OCR
    engine installed."""
    try:
        parsed = _parse(data)
    except InvalidDicomError as error:
        return Quarantined("NotDicom", f"not a DICOM file: {error}")
    except Exception as error:
        return Quarantined("Unreadable", f"{type(error).__name__}: {error}")
    if isinstance(parsed, Quarantined):
        return parsed
    dataset = parsed.dataset
    if "SOPInstanceUID" not in dataset or "SOPClassUID" not in dataset:
        return Quarantined("NotAnInstance", "no SOP Instance UID or SOP Class UID: not a composite instance")
    try:
        problem = truncation(dataset, parsed.pixel_bytes)
    except (ValueError, TypeError) as error:
        return Quarantined("Unreadable", f"image header values cannot be read: {error}")
    if problem:
        return Quarantined("Unreadable", f"truncated file: {problem}")
    pixel_tail = parsed.pixel_tail
    checked: pixels.PixelsChecked | None = None
    reason = burned_in_reason(dataset, config.burned_in_annotations)
    if reason:
        judged = _check_pixels(data, reason, installed_finder(), max_pixel_bytes)
        if isinstance(judged, Quarantined):
            return judged
        checked, dataset, pixel_tail = judged, judged.dataset, b""
    try:
        outcome = deidentify(dataset, config, pixels_checked=checked is not None)
    except Exception as error:
        return Quarantined("DeidentificationFailed", f"{type(error).__name__}: {error}")
    if isinstance(outcome, Quarantined):
        return outcome
    assert isinstance(outcome, Kept)
    if checked is not None and checked.blanked:
        pixels.mark_cleaned(outcome.dataset)
    meta = getattr(outcome.dataset, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        # Written inflated: the content is the same, and validators mis-read pydicom's deflated output.
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # The preamble is free for application profiles (PS3.10 7.1) and may hold anything: zeroed.
    outcome.dataset.preamble = PREAMBLE
    buffer = io.BytesIO()
    try:
        outcome.dataset.save_as(buffer, enforce_file_format=True)
    except Exception as error:
        return Quarantined("WriteFailed", f"{type(error).__name__}: {error}")
    return CleanFile(
        parts=(buffer.getvalue(), pixel_tail),
        patient=outcome.patient,
        study=outcome.study,
        series=outcome.series,
        instance=outcome.instance,
        modality=outcome.modality,
        body_part=outcome.body_part,
        cleaned=tuple(sorted({*outcome.cleaned, *(checked.cleaned() if checked else ())})),
    )


def _check_pixels(
    data: bytes, reason: str, finder: TextFinder | None, max_pixel_bytes: int
) -> pixels.PixelsChecked | Quarantined:
    """Clean Pixel Data on the whole file (its pixels included), read again from ``data``."""
    try:
        whole = _parse_whole(data)
    except Exception as error:
        return Quarantined("Unreadable", f"{type(error).__name__}: {error}")
    if isinstance(whole, Quarantined):
        return whole
    try:
        return pixels.check_burned_in(whole.dataset, reason, shipped_rules(), finder, max_pixel_bytes)
    except Exception as error:
        return Quarantined(
            "BurnedInAnnotation",
            f"{reason}; its pixels could not be cleaned: {type(error).__name__}: {error}",
        )
