"""De-identification of whole files: bytes in, bytes out. Most files are cleaned on their encoded bytes
(``rewrite``); the rest go through pydicom (``pydicom_file``), which is imported only when a file needs it.
Unreadable input is quarantined with the parser's reason."""

from __future__ import annotations

import struct
import zlib

from cleanroom.deid.clean_file import CleanFile, Quarantined
from cleanroom.deid.policy import DeidConfig
from cleanroom.deid.rewrite import rewrite, transfer_syntax

# What a deflated data set may inflate to, by default; the ingest passes its own cap. pydicom inflates a
# Deflated Explicit VR Little Endian file in one piece (PS3.5 A.5), so a 1 MB file can ask for gigabytes.
DEFAULT_MAX_INFLATED_BYTES = 1 << 30
_INFLATE_STEP = 1 << 20
DEFLATED_EXPLICIT_LITTLE = "1.2.840.10008.1.2.1.99"
LONG_LENGTH_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UN", b"UC", b"UR", b"UT"}
UNDEFINED_LENGTH = 0xFFFFFFFF


def pixel_element_end(tail: bytes | memoryview, implicit: bool, little: bool) -> tuple[int, int] | None:
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


def only_trailing_padding(rest: bytes, implicit: bool, little: bool) -> bool:
    if len(rest) < 8 or struct.unpack(("<" if little else ">") + "HH", rest[:4]) != (0xFFFC, 0xFFFC):
        return False
    found = pixel_element_end(rest, implicit, little)
    return found is not None and found[0] == len(rest)


def pixel_element(data: bytes, start: int, implicit: bool = False) -> tuple[int, int] | None:
    """Where the pixel data element at ``start`` (little endian) ends and its value length, when it can be
    carried over as it is: it ends inside the file and only trailing padding follows."""
    tail = memoryview(data)[start:]
    found = pixel_element_end(tail, implicit, True)
    if found is None:
        return None
    end, length = found
    if end != len(tail) and not only_trailing_padding(bytes(tail[end:]), implicit, True):
        return None
    return start + end, length


def inflation_refused(data: bytes, limit: int) -> Quarantined | None:
    """A quarantine when ``data`` is a deflated file whose data set inflates past ``limit`` bytes. It is
    measured by inflating a megabyte at a time and discarding it, so the measure itself costs no memory."""
    found = transfer_syntax(data)
    if found is None or found[0] != DEFLATED_EXPLICIT_LITTLE:
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
    try:
        # A deflated file is never cleaned here (NotHandled before anything is inflated), so its size is
        # measured only on the way to pydicom.
        return rewrite(data, config, pixel_element)
    except Exception:
        # NotHandled, or whatever else surprised the fast path: the engine judges the file and says what is
        # wrong with it. Files whose pixels may show burned-in text always come this way (Clean Pixel Data).
        pass
    refused = inflation_refused(data, max_inflated_bytes)
    if refused is not None:
        return refused
    # Imported here: a run whose files all take the fast path never loads pydicom (nor numpy, nor OCR).
    from cleanroom.deid.pydicom_file import deidentify_with_pydicom

    return deidentify_with_pydicom(data, config, max_inflated_bytes)
