"""Clean Pixel Data (PS3.15 E.3.1) for files whose pixels may show identifying text.

A file marked Burned In Annotation YES, or of a type that usually carries burned-in text (secondary capture,
ultrasound) that does not say NO, is no longer quarantined on sight:
- when a pixel rule (``pixel_rules``, CTP's library) covers its kind of image, the rule's regions are blanked
  (zero) in every frame and sample, and the cleaned pixels are written back natively (Explicit VR Little
  Endian, whatever the input was: decoded with the plugins pydicom has here, lossy flags kept or set);
- then the OCR engine (``ocr``) looks at the pixels as they would be published; any text it still finds
  quarantines the file (``BurnedInText``) with the boxes where it was, and the file is kept otherwise;
- a file marked YES that no rule covers stays quarantined (``BurnedInAnnotation``): YES says that text is
  there, and nothing says where; so does every file that cannot be checked (no OCR engine installed, pixel
  data that cannot be decoded here, bit-packed pixels to rewrite).
A file kept unblanked (suspected only, and OCR found no text) keeps its pixel data byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)

from cleanroom.deid import pixel_arrays
from cleanroom.deid.clean_file import Cleaned
from cleanroom.deid.engine import Quarantined
from cleanroom.deid.ocr import TextBox, TextFinder
from cleanroom.deid.pixel_rules import PixelRule, Region, Values, matching_rule
from cleanroom.deid.policy import expected_pixel_bytes

if TYPE_CHECKING:
    import numpy.typing as npt

# PS3.16 CID 7050: the option this module carries out, named in De-identification Method Code Sequence.
CLEAN_PIXEL_DATA_CODE = ("113101", "Clean Pixel Data Option")
CLEAN_PIXEL_DATA_METHOD = "CleanPixelData"
# Transfer syntaxes whose pixels have been through lossy compression (or may have, for JPEG 2000 and HTJ2K
# unless the file says otherwise), with the Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1) each names.
LOSSY_METHODS = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
    JPEG2000MC: "ISO_15444_2",
    HTJ2K: "ISO_15444_15",
}
# How many boxes a quarantine reason lists before it only counts the rest.
LISTED_BOXES = 12


@dataclass(frozen=True)
class PixelsChecked:
    """A file whose pixels were checked, and blanked where a rule said: ``dataset`` is the whole file,
    its pixel data rewritten natively when anything was blanked, as it was otherwise."""

    dataset: Dataset
    rule: str | None
    blanked: tuple[Region, ...]
    finder: str

    def cleaned(self) -> tuple[Cleaned, ...]:
        """What the report and the manifest record: each region blanked, and the rule that named it."""
        return tuple(
            Cleaned("PixelData", f"burned-in text region {region} of pixel rule '{self.rule}'")
            for region in self.blanked
        )


def header_values(dataset: Dataset) -> Values:
    """The original header's values as the pixel rules read them: text by keyword or (GGGG,EEEE), ""
    when absent, several values joined by a backslash, file meta attributes from the file meta."""

    def value(name: str) -> str:
        found = re.fullmatch(r"\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)", name)
        tag = int(found[1] + found[2], 16) if found else tag_for_keyword(name)
        if tag is None:
            return ""
        source = dataset.file_meta if tag >> 16 == 2 and hasattr(dataset, "file_meta") else dataset
        if tag not in source:
            return ""
        raw = source[tag].value
        if raw is None or isinstance(raw, DicomSequence):
            return ""
        if isinstance(raw, bytes):
            return raw.decode("latin-1").rstrip("\0 ")
        if isinstance(raw, MultiValue | list | tuple):
            return "\\".join(str(item) for item in raw)
        return str(raw)

    return value


def _describe(dataset: Dataset) -> str:
    parts = [
        f"{keyword} {dataset.get(keyword)!s}"
        for keyword in ("Modality", "Manufacturer", "ManufacturerModelName")
        if dataset.get(keyword)
    ]
    parts.append(f"{dataset.get('Rows', '?')} x {dataset.get('Columns', '?')} pixels")
    return ", ".join(parts)


def check_burned_in(
    dataset: Dataset,
    reason: str,
    rules: Sequence[PixelRule],
    finder: TextFinder | None,
    max_pixel_bytes: int,
) -> PixelsChecked | Quarantined:
    """Clean Pixel Data for ``dataset`` (the whole file, original header, pixels included), which
    ``reason`` says may show burned-in text: blanked by the first matching rule and checked by ``finder``,
    or quarantined with why (see the module docstring). ``dataset`` is changed in place when blanked."""
    marked = str(dataset.get("BurnedInAnnotation", "")).strip().upper() == "YES"
    rule = matching_rule(rules, header_values(dataset))
    if marked and rule is None:
        return Quarantined(
            "BurnedInAnnotation",
            f"{reason}, and no pixel rule says where the text is ({_describe(dataset)})",
            "BurnedInAnnotation",
        )
    if finder is None:
        return Quarantined(
            "BurnedInAnnotation",
            f"{reason}, and no OCR engine is installed to check its pixels (cleanroom's ocr extra)",
            "BurnedInAnnotation",
        )
    decoded = _decode(dataset, reason, max_pixel_bytes)
    if isinstance(decoded, Quarantined):
        return decoded
    frames, image = decoded
    blanked: tuple[Region, ...] = ()
    if rule is not None:
        if int(image.get("bits_allocated", 8)) == 1:
            return Quarantined(
                "BurnedInAnnotation",
                f"{reason}; its pixels are bit-packed (Bits Allocated 1), which this de-identifier does not rewrite",
                "PixelData",
            )
        frames, blanked = pixel_arrays.blank(frames, rule.regions)
    found = _find_text(_displayed(frames, image, dataset), finder)
    if found:
        where = (
            f"after blanking the regions of pixel rule '{rule.name}'"
            if rule
            else f"and no pixel rule covers it ({_describe(dataset)})"
        )
        listed = ", ".join(f"{label} {box}" for label, box in found[:LISTED_BOXES])
        more = f" and {len(found) - LISTED_BOXES} more" if len(found) > LISTED_BOXES else ""
        return Quarantined(
            "BurnedInText",
            f"{reason}; text remains in the pixel data {where}: {finder.name} found {len(found)} "
            f"box(es): {listed}{more}",
            "PixelData",
        )
    if rule is not None:
        _write_native(dataset, frames, image)
    return PixelsChecked(dataset, rule.name if rule else None, blanked, finder.name)


def _decode(
    dataset: Dataset, reason: str, max_pixel_bytes: int
) -> tuple[npt.NDArray[Any], dict[str, Any]] | Quarantined:
    """Every frame as frames x rows x columns x samples (colour as RGB), and the Image Pixel values that
    describe the array (pydicom's), or why the pixels cannot be decoded here."""
    from pydicom.pixels.decoders.base import get_decoder

    if "PixelData" not in dataset:
        return Quarantined("BurnedInAnnotation", f"{reason}, and it has no Pixel Data to clean", "PixelData")
    try:
        size = expected_pixel_bytes(
            int(dataset.Rows),
            int(dataset.Columns),
            int(dataset.get("SamplesPerPixel", 1)),
            max(int(dataset.get("BitsAllocated", 8)), 8),
            int(dataset.get("NumberOfFrames") or 1),
        )
    except (AttributeError, TypeError, ValueError) as error:
        return Quarantined("Unreadable", f"image header values cannot be read: {error}", "PixelData")
    if size > max_pixel_bytes:
        return Quarantined(
            "TooLarge",
            f"{reason}; its decoded pixels would take {size} bytes, over the {max_pixel_bytes} one file may "
            "take (CLEANROOM_INGEST_MAX_FILE_BYTES)",
            "PixelData",
        )
    syntax = UID(dataset.file_meta.TransferSyntaxUID)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return _undecodable(reason, syntax, "pydicom has no decoder for it")
    if not decoder.is_available:
        return _undecodable(reason, syntax, "; ".join(decoder.missing_dependencies))
    try:
        # YCbCr (JPEG's usual colour model) comes out as RGB, which is what is written back.
        options: dict[str, Any] = {"as_rgb": True}
        array, image = decoder.as_array(dataset, **options)
        samples = int(image["samples_per_pixel"])
        frames = pixel_arrays.as_frames(array, int(image["number_of_frames"]), samples)
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return _undecodable(reason, syntax, f"{type(error).__name__}: {first_line}")
    return frames, dict(image)


def _undecodable(reason: str, syntax: UID, why: str) -> Quarantined:
    return Quarantined(
        "BurnedInAnnotation",
        f"{reason}, and its pixel data ({syntax.name}) cannot be decoded here to clean or check it: {why}",
        "PixelData",
    )


def _displayed(frames: npt.NDArray[Any], image: dict[str, Any], dataset: Dataset) -> npt.NDArray[Any]:
    """The pixels as a viewer shows them: palette indices through the palette."""
    if str(image.get("photometric_interpretation", "")) != "PALETTE COLOR":
        return frames
    from pydicom.pixels.processing import apply_color_lut

    return apply_color_lut(frames[..., 0], dataset)


def _find_text(frames: npt.NDArray[Any], finder: TextFinder) -> list[tuple[str, TextBox]]:
    return [(label, box) for label, view in pixel_arrays.ocr_views(frames) for box in finder.find_text(view)]


def _write_native(dataset: Dataset, frames: npt.NDArray[Any], image: dict[str, Any]) -> None:
    """The cleaned pixels into ``dataset`` as native Explicit VR Little Endian pixel data (frame by frame,
    samples interleaved), with the Image Pixel attributes that now describe them, the lossy flags a lossy
    input leaves (PS3.3 C.7.6.1.1.5: once lossy, always flagged) and Burned In Annotation NO."""
    import numpy as np

    syntax = UID(dataset.file_meta.TransferSyntaxUID)
    little: npt.NDArray[Any] = np.ascontiguousarray(frames, dtype=frames.dtype.newbyteorder("<"))
    data = little.tobytes()
    if len(data) % 2:
        data += b"\0"
    bits = int(image["bits_allocated"])
    dataset.PixelData = data
    element = dataset["PixelData"]
    element.VR = "OB" if bits <= 8 else "OW"
    element.is_undefined_length = False
    dataset.PhotometricInterpretation = str(image["photometric_interpretation"])
    dataset.BitsAllocated = bits
    dataset.BitsStored = int(image["bits_stored"])
    dataset.HighBit = int(image["bits_stored"]) - 1
    dataset.PixelRepresentation = int(image["pixel_representation"])
    dataset.SamplesPerPixel = int(image["samples_per_pixel"])
    if int(image["samples_per_pixel"]) > 1:
        dataset.PlanarConfiguration = 0
    elif "PlanarConfiguration" in dataset:
        del dataset.PlanarConfiguration
    method = LOSSY_METHODS.get(syntax)
    if method is not None and str(dataset.get("LossyImageCompression", "")) != "00":
        dataset.LossyImageCompression = "01"
        methods = [str(m) for m in _as_list(dataset.get("LossyImageCompressionMethod"))]
        if not methods or methods[-1] != method:
            dataset.LossyImageCompressionMethod = [*methods, method] if methods else method
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.BurnedInAnnotation = "NO"


def _as_list(value: object) -> list[object]:
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def mark_cleaned(dataset: Dataset) -> None:
    """PS3.15 E.1.1 markers for a file whose pixels were cleaned: the Clean Pixel Data Option among the
    method's words and codes (in code order, as ``markers.method_codes`` writes them)."""
    methods = [str(m) for m in _as_list(dataset.get("DeidentificationMethod"))]
    if CLEAN_PIXEL_DATA_METHOD not in methods:
        dataset.DeidentificationMethod = [*methods, CLEAN_PIXEL_DATA_METHOD]
    codes = dataset.get("DeidentificationMethodCodeSequence")
    if codes is None:
        return
    if any(str(item.get("CodeValue", "")) == CLEAN_PIXEL_DATA_CODE[0] for item in codes):
        return
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = (
        CLEAN_PIXEL_DATA_CODE[0],
        "DCM",
        CLEAN_PIXEL_DATA_CODE[1],
    )
    position = sum(1 for existing in codes if str(existing.get("CodeValue", "")) < CLEAN_PIXEL_DATA_CODE[0])
    codes.insert(position, item)
