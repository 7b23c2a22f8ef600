"""Clean Pixel Data, attacked: identifiers burned into the pixels of sample ultrasound and secondary-capture
files, native and compressed, where a rule covers them and where none does, read back by the real OCR
engine (the ocr extra, which the dev install has).

Before Clean Pixel Data every such file was quarantined on sight; each test that keeps one failed then.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from cleanroom.api import DeidentificationMethod
from cleanroom.deid import CleanFile, DeidConfig, Keyring, Quarantined, deidentify_bytes
from cleanroom.deid.engine import burned_in_reason
from cleanroom.deid.files import pixel_element
from cleanroom.deid.ocr import TextFinder, installed_finder
from cleanroom.deid.pixel_arrays import as_frames, ocr_views
from cleanroom.deid.policy import BURNED_IN_PRONE_PREFIXES
from cleanroom.deid.pydicom_file import deidentify_with_pydicom
from cleanroom.deid.rewrite import NotHandled, rewrite
from tests import dicom_samples

CONFIG = DeidConfig(DeidentificationMethod.PSEUDONYMIZE, Keyring(b"site-key-for-tests-0123456789abcdef"))
NAME, PATIENT_ID, BIRTH_DATE = "DOE^JANE", "MRN12345678", "19800102"
# What a scanner burns into its header band: the patient's name, ID and birth date, as people read them.
BANNER = "DOE^JANE  MRN12345678  1980-01-02"
# Philips iU22 screens of 480 rows carry their text in the top 47 rows (CTP's library).
IU22_BAND = 47


@pytest.fixture(scope="module")
def ocr() -> TextFinder:
    finder = installed_finder()
    assert finder is not None, "the OCR engine is missing: pip install -e '.[dev]' (it brings the ocr extra)"
    return finder


def background(rows: int, columns: int, seed: int) -> np.ndarray:
    """An ultrasound-like picture: dark speckle with a brighter blob of 'anatomy' in the middle."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    blob = 120 * np.exp(
        -(((y - rows * 0.6) / (rows * 0.2)) ** 2 + ((x - columns / 2) / (columns * 0.25)) ** 2)
    )
    return np.clip(rng.integers(0, 40, size=(rows, columns)) + blob, 0, 255).astype(np.uint8)


def draw(image: np.ndarray, texts: Sequence[tuple[int, int, str]]) -> np.ndarray:
    """``image`` (grey, or RGB) with each text drawn in white at (x, y), 16-pixel glyphs."""
    picture = Image.fromarray(image)
    pen = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=16)
    for x, y, text in texts:
        pen.text((x, y), text, fill=255 if image.ndim == 2 else (255, 255, 255), font=font)
    return np.asarray(picture)


def sample(
    base: str,
    *,
    rows: int,
    columns: int,
    manufacturer: str,
    model: str,
    frames: int = 1,
    rgb: bool = False,
    texts: Sequence[tuple[int | None, int, int, str]] = (),
    **attributes: Any,
) -> pydicom.Dataset:
    """pydicom-data's ``base`` file with the planted patient and synthetic pixels of the given size, each
    text (frame or None for every frame, x, y, text) burned in."""
    ds = pydicom.dcmread(dicom_samples.pydicom_data_file(base))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT_ID, BIRTH_DATE
    ds.Manufacturer, ds.ManufacturerModelName = manufacturer, model
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    pictures = []
    for frame in range(frames):
        picture = background(rows, columns, seed=frame)
        if rgb:
            picture = np.stack([picture, picture, (picture * 0.8).astype(np.uint8)], axis=-1)
        pictures.append(draw(picture, [(x, y, t) for f, x, y, t in texts if f is None or f == frame]))
    pixels = np.stack(pictures)
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    elif "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    elif "NumberOfFrames" in ds:
        del ds.NumberOfFrames
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def encoded(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def iu22(**kwargs: Any) -> pydicom.Dataset:
    """A Philips iU22 ultrasound screen of 480 x 640, the banner burned into its header band."""
    texts = [(None, 12, 14, BANNER), *kwargs.pop("texts", ())]
    return sample(
        "US1_UNCR.dcm",
        rows=480,
        columns=640,
        manufacturer="Philips Medical Systems",
        model="iU22",
        texts=texts,
        **kwargs,
    )


def deidentify(data: bytes) -> CleanFile | Quarantined:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return deidentify_bytes(data, CONFIG)


def text_in(data: bytes, ocr: TextFinder) -> list[object]:
    ds = pydicom.dcmread(io.BytesIO(data))
    frames = as_frames(ds.pixel_array, int(ds.get("NumberOfFrames") or 1), int(ds.SamplesPerPixel))
    return [box for _, view in ocr_views(frames) for box in ocr.find_text(view)]


def test_the_ocr_engine_reads_the_planted_banner(ocr: TextFinder) -> None:
    """The attack works on the raw file: whatever cleans it must beat this."""
    assert text_in(encoded(iu22()), ocr)


def test_a_banner_in_a_ruled_region_is_blanked_and_the_file_kept(ocr: TextFinder) -> None:
    original = iu22(frames=3, rgb=True)
    result = deidentify(encoded(original))
    assert isinstance(result, CleanFile), result
    out = pydicom.dcmread(io.BytesIO(result.data))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    cleaned = out.pixel_array
    assert not cleaned[:, :IU22_BAND].any(), "the band is zeros in every frame and sample"
    assert (cleaned[:, IU22_BAND:] == original.pixel_array[:, IU22_BAND:]).all(), "nothing else changed"
    assert text_in(result.data, ocr) == []
    assert [c.identifier for c in result.cleaned if c.attribute == "PixelData"] == [
        "burned-in text region (x=0, y=0, width=640, height=47) of pixel rule 'US / Philips / IU22'"
    ]


def test_text_outside_every_ruled_region_quarantines_with_its_boxes() -> None:
    result = deidentify(encoded(iu22(texts=[(None, 200, 300, "JANE DOE 02.01.1980")])))
    assert isinstance(result, Quarantined) and result.reason == "BurnedInText", result
    assert "after blanking the regions of pixel rule 'US / Philips / IU22'" in result.detail
    assert "frame 1 (x=" in result.detail
    assert "JANE" not in result.detail and "1980" not in result.detail, "boxes, never the words"


def test_text_in_a_frame_the_sampling_skips_is_still_found() -> None:
    # Frames 1, 4, 7 and 10 are shown on their own; the name shows only in frame 5.
    result = deidentify(encoded(iu22(frames=10, texts=[(4, 150, 250, "DOE JANE MRN12345678")])))
    assert isinstance(result, Quarantined) and result.reason == "BurnedInText", result
    assert "brightest over all frames" in result.detail


def test_a_suspected_type_no_rule_covers_is_kept_as_it_is_without_text_and_quarantined_with_it() -> None:
    clean = sample(
        "US1_UNCR.dcm", rows=480, columns=640, manufacturer="G.E. Medical Systems", model="LOGIQ 700"
    )
    result = deidentify(encoded(clean))
    assert isinstance(result, CleanFile), result
    out = pydicom.dcmread(io.BytesIO(result.data))
    assert out.PixelData == clean.PixelData, "pixels unchanged, byte for byte"
    assert "BurnedInAnnotation" not in out and not any(c.attribute == "PixelData" for c in result.cleaned)
    texted = sample(
        "SC_rgb.dcm",
        rows=200,
        columns=300,
        manufacturer="",
        model="",
        rgb=True,
        texts=[(None, 20, 90, "DOE^JANE 1980-01-02")],
    )
    result = deidentify(encoded(texted))
    assert isinstance(result, Quarantined) and result.reason == "BurnedInText", result
    assert "no pixel rule covers it" in result.detail


def test_a_secondary_capture_dose_screen_is_cleaned_by_its_rule(ocr: TextFinder) -> None:
    """Siemens CT dose screens of 860 rows (CTP: the top 60 rows of 1132 columns), a secondary capture."""
    screen = sample(
        "SC_rgb.dcm",
        rows=860,
        columns=1132,
        manufacturer="SIEMENS",
        model="",
        texts=[(None, 30, 20, BANNER)],
        Modality="CT",
        ImageType=["DERIVED", "SECONDARY"],
    )
    result = deidentify(encoded(screen))
    assert isinstance(result, CleanFile), result
    assert not pydicom.dcmread(io.BytesIO(result.data)).pixel_array[:60].any()
    assert text_in(result.data, ocr) == []


def test_marked_yes_with_no_rule_stays_quarantined() -> None:
    marked = sample(
        "US1_UNCR.dcm",
        rows=480,
        columns=640,
        manufacturer="G.E. Medical Systems",
        model="LOGIQ 700",
        BurnedInAnnotation="YES",
    )
    result = deidentify(encoded(marked))
    assert isinstance(result, Quarantined) and result.reason == "BurnedInAnnotation", result


def test_rle_compressed_pixels_are_cleaned_and_written_native(ocr: TextFinder) -> None:
    ds = iu22(rgb=True)
    ds.compress(RLELossless)
    result = deidentify(encoded(ds))
    assert isinstance(result, CleanFile), result
    out = pydicom.dcmread(io.BytesIO(result.data))
    assert (
        out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and not out["PixelData"].is_undefined_length
    )
    assert not out.pixel_array[:IU22_BAND].any()
    assert "LossyImageCompression" not in out, "RLE is lossless"
    assert text_in(result.data, ocr) == []


def test_jpeg_baseline_pixels_are_cleaned_written_native_and_flagged_lossy(ocr: TextFinder) -> None:
    ds = iu22(rgb=True)
    picture = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(picture, format="JPEG", quality=90, subsampling=1)
    ds.PixelData = encapsulate([picture.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    result = deidentify(encoded(ds))
    assert isinstance(result, CleanFile), result
    out = pydicom.dcmread(io.BytesIO(result.data))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.PhotometricInterpretation == "RGB" and out.PlanarConfiguration == 0
    assert out.LossyImageCompression == "01" and out.LossyImageCompressionMethod == "ISO_10918_1"
    assert not out.pixel_array[:IU22_BAND].any()
    assert text_in(result.data, ocr) == []


def test_the_fast_path_steps_aside_for_pixels_to_clean() -> None:
    data = encoded(iu22())
    with pytest.raises(NotHandled):
        rewrite(data, CONFIG, pixel_element)
    fast, slow = deidentify(data), deidentify_with_pydicom(data, CONFIG)
    assert isinstance(fast, CleanFile) and isinstance(slow, CleanFile)
    assert fast.data == slow.data


def test_share_of_sample_ultrasound_and_secondary_captures_kept_before_and_after() -> None:
    """pydicom's and pydicom-data's ultrasound and secondary-capture files: before Clean Pixel Data only
    those that said Burned In Annotation NO were kept; now every one whose pixels are clean or cleaned."""
    files = []
    for path in dicom_samples.pydicom_test_files() + dicom_samples.pydicom_data_files():
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if str(header.get("SOPClassUID", "")).startswith(BURNED_IN_PRONE_PREFIXES):
            files.append((path, header))
    outcomes = {path.name: deidentify(path.read_bytes()) for path, _ in files}
    kept_after = sorted(name for name, r in outcomes.items() if isinstance(r, CleanFile))
    # Before: the burned-in check quarantined every file it names, whatever the pixels showed.
    kept_before = sorted(
        path.name
        for path, header in files
        if isinstance(outcomes[path.name], CleanFile)
        and burned_in_reason(header, CONFIG.burned_in_annotations) is None
    )
    reasons: dict[str, int] = {}
    for r in outcomes.values():
        if isinstance(r, Quarantined):
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
    print(
        f"\nsample ultrasound and secondary-capture files: {len(files)}; kept before Clean Pixel Data "
        f"{len(kept_before)} ({len(kept_before) / len(files):.0%}), after {len(kept_after)} "
        f"({len(kept_after) / len(files):.0%}); quarantined by reason {dict(sorted(reasons.items()))}"
    )
    assert len(files) >= 70
    assert len(kept_after) >= len(files) // 2 > len(kept_before)
    # The real ultrasound screens all show text the rules do not cover (probe, depth, gain, a hospital's
    # name): they stay out, each with boxes.
    for name in ("US1_UNCR.dcm", "OBXXXX1A.dcm", "examples_palette.dcm", "gdcm-US-ALOKA-16.dcm"):
        result = outcomes[name]
        assert isinstance(result, Quarantined) and result.reason == "BurnedInText", name
