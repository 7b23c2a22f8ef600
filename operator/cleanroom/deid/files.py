"""De-identification of whole files: bytes in, bytes out. Unreadable input is quarantined with the parser's reason."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from cleanroom.deid import pixels, policy
from cleanroom.deid.clean_file import CleanFile
from cleanroom.deid.engine import Kept, Quarantined, burned_in_reason, deidentify
from cleanroom.deid.ocr import TextFinder, installed_finder
from cleanroom.deid.pixel_rules import shipped_rules
from cleanroom.deid.policy import DeidConfig
from cleanroom.deid.rewrite import PREAMBLE, rewrite, transfer_syntax

# What a deflated data set may inflate to, by default; the ingest passes its own cap. pydicom inflates a
# Deflated Explicit VR Little Endian file in one piece (PS3.5 A.5), so a 1 MB file can ask for gigabytes.
DEFAULT_MAX_INFLATED_BYTES = 1 << 30
_INFLATE_STEP = 1 << 20


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
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
LONG_LENGTH_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UN", b"UC", b"UR", b"UT"}
UNDEFINED_LENGTH = 0xFFFFFFFF


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


def _pixel_element_end(tail: bytes | memoryview, implicit: bool, little: bool) -> tuple[int, int] | None:
    """(end offset, value length) of the element at the start of ``tail`` (the pixel data, or padding); None if
    it runs past the end of the file. Encapsulated pixel data (undefined length) ends after its delimiter."""
    endian = "<" if little else ">"
    if len(tail) < 8:
        return None
    if implicit:
        header, length = 8, struct.unpack(endian + "L", tail[4:8])[0]
    elif bytes(tail[4:6]) in LONG_LENGTH_VRS:
        if len(tail) < 12:
            return None
        header, length = 12, struct.unpack(endian + "L", tail[8:12])[0]
    else:
        header, length = 8, struct.unpack(endian + "H", tail[6:8])[0]
    if length != UNDEFINED_LENGTH:
        end = header + length
        return (end, length) if end <= len(tail) else None
    position = header
    while position + 8 <= len(tail):
        group, element, item_length = struct.unpack("<HHL", tail[position : position + 8])
        position += 8
        if (group, element) == (0xFFFE, 0xE0DD):
            return position, position - header
        if (group, element) != (0xFFFE, 0xE000):
            return None
        position += item_length
    return None


def _only_trailing_padding(rest: bytes, implicit: bool, little: bool) -> bool:
    if len(rest) < 8 or struct.unpack(("<" if little else ">") + "HH", rest[:4]) != (0xFFFC, 0xFFFC):
        return False
    found = _pixel_element_end(rest, implicit, little)
    return found is not None and found[0] == len(rest)


@dataclass(frozen=True)
class _Parsed:
    dataset: pydicom.Dataset
    # The pixel data element exactly as it was in the input, appended unchanged after the cleaned header;
    # empty when the whole file was parsed (no pixels, deflated, or elements after the pixels).
    pixel_tail: bytes = b""
    pixel_bytes: int | None = None


def pixel_element(data: bytes, start: int, implicit: bool = False) -> tuple[int, int] | None:
    """Where the pixel data element at ``start`` (little endian) ends and its value length, when it can be
    carried over as it is: it ends inside the file and only trailing padding follows."""
    tail = memoryview(data)[start:]
    found = _pixel_element_end(tail, implicit, True)
    if found is None:
        return None
    end, length = found
    if end != len(tail) and not _only_trailing_padding(bytes(tail[end:]), implicit, True):
        return None
    return start + end, length


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
    found = _pixel_element_end(tail, bool(implicit), bool(little))
    if found is None:
        return Quarantined("Unreadable", "truncated file: the pixel data runs past the end of the file")
    end, length = found
    if end != len(tail) and not _only_trailing_padding(tail[end:], bool(implicit), bool(little)):
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


def inflation_refused(data: bytes, limit: int) -> Quarantined | None:
    """A quarantine when ``data`` is a deflated file whose data set inflates past ``limit`` bytes. It is
    measured by inflating a megabyte at a time and discarding it, so the measure itself costs no memory."""
    found = transfer_syntax(data)
    if found is None or found[0] != DeflatedExplicitVRLittleEndian:
        return None
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending: bytes | memoryview = memoryview(data)[found[1] :]
    total = 0
    try:
        while pending:
            total += len(inflater.decompress(pending, _INFLATE_STEP))
            if total > limit:
                return Quarantined(
                    "TooLarge",
                    f"the deflated data set inflates to more than {limit} bytes (from {len(data)} bytes), "
                    "over what one file may inflate to (CLEANROOM_INGEST_MAX_FILE_BYTES): a decompression bomb, "
                    "or a file to split",
                )
            pending = inflater.unconsumed_tail
    except zlib.error:
        return None  # not valid deflate data: the parser says what is wrong with it
    return None


def deidentify_bytes(
    data: bytes, config: DeidConfig, max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES
) -> CleanFile | Quarantined:
    """De-identify one file. The header is cleaned; native or encapsulated pixel data is copied byte for byte
    (decoding it would only cost time), except in a file whose pixels may show burned-in text, which Clean
    Pixel Data blanks and checks (``deid.pixels``). Most files are cleaned on their encoded bytes
    (``rewrite``); the rest, and every file that ends in quarantine, go through pydicom and ``engine``. A
    deflated file that would inflate past ``max_inflated_bytes`` is quarantined unread, and so is a file
    whose decoded pixels would take more."""
    refused = inflation_refused(data, max_inflated_bytes)
    if refused is not None:
        return refused
    try:
        return rewrite(data, config, pixel_element)
    except Exception:
        # NotHandled, or whatever else surprised the fast path: the engine judges the file and says what is
        # wrong with it. Files whose pixels may show burned-in text always come this way (Clean Pixel Data).
        return deidentify_with_pydicom(data, config, max_inflated_bytes)


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
        data=buffer.getvalue() + pixel_tail,
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
