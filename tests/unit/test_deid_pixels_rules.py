"""Clean Pixel Data's pure parts: CTP's rules as data and as CTP reads them, blanking arrays, the views the
OCR engine is shown, and the decisions with an OCR engine that only reports what it is told."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cleanroom.deid import pixel_arrays, pixels
from cleanroom.deid.engine import Quarantined
from cleanroom.deid.ocr import TextBox, box_around, counts_as_text
from cleanroom.deid.pixel_rules import Region, matching_rule, parse_rules, shipped_rules

CONVERTER = Path(__file__).resolve().parents[2] / "hack" / "ctp_pixel_rules.py"
US_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.6.1"


def header(**values: object) -> pydicom.Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def converter() -> object:
    spec = importlib.util.spec_from_file_location("ctp_pixel_rules", CONVERTER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_rules_are_ctps_library_with_its_source_and_licence() -> None:
    document = json.loads(
        (
            Path(__file__).resolve().parents[2] / "operator/cleanroom/deid/data/ctp-pixel-regions.json"
        ).read_text()
    )
    assert document["source"]["repository"] == "https://github.com/johnperry/CTP"
    assert len(document["source"]["commit"]) == 40
    assert "RSNA Public License" in document["source"]["licence"]
    rules = shipped_rules()
    assert len(rules) == len(document["rules"]) >= 50
    assert all(rule.regions for rule in rules)


def test_a_philips_cx50_screen_of_600_rows_loses_its_top_59_rows() -> None:
    ds = header(
        Modality="US",
        Manufacturer="Philips Medical Systems",
        ManufacturerModelName="CX50",
        Rows=600,
        Columns=800,
    )
    rule = matching_rule(shipped_rules(), pixels.header_values(ds))
    assert rule is not None and rule.name == "US / Philips / CX50"
    assert rule.regions == (Region(0, 0, 800, 59),)
    # The same model at another screen size is not covered: its text is elsewhere.
    ds.Rows = 350
    assert matching_rule(shipped_rules(), pixels.header_values(ds)) is None


def test_rules_read_values_as_ctp_does() -> None:
    """Absent reads as "", several values are joined by a backslash, file meta attributes come from the
    file meta, repeating-group tags by number, and the first rule that holds wins."""
    rules = parse_rules(
        {
            "rules": [
                {
                    "name": "dose screen",
                    "when": {
                        "all": [
                            {
                                "attribute": "ImageType",
                                "test": "containsIgnoreCase",
                                "value": "secondary\\dose",
                            },
                            {"not": {"attribute": "SeriesDescription", "test": "contains", "value": "x"}},
                        ]
                    },
                    "regions": [[0, 0, 10, 10]],
                },
                {
                    "name": "vendor",
                    "when": {
                        "any": [
                            {
                                "attribute": "ImplementationVersionName",
                                "test": "startsWith",
                                "value": "MINDRAY",
                            },
                            {"attribute": "(6000,0022)", "test": "equals", "value": "Siemens"},
                        ]
                    },
                    "regions": [[1, 1, 2, 2]],
                },
                {
                    "name": "wide",
                    "when": {"attribute": "Columns", "test": "isGreaterThan", "value": "1000"},
                    "regions": [[0, 0, 5, 5]],
                },
            ]
        }
    )
    dose = header(ImageType=["DERIVED", "SECONDARY", "DOSE"])
    assert matching_rule(rules, pixels.header_values(dose)).name == "dose screen"
    dose.SeriesDescription = "x"
    assert matching_rule(rules, pixels.header_values(dose)) is None
    mindray = header()
    mindray.file_meta.ImplementationVersionName = "MINDRAY_1"
    assert matching_rule(rules, pixels.header_values(mindray)).name == "vendor"
    overlay = header()
    overlay.add_new(0x60000022, "LO", "Siemens")
    assert matching_rule(rules, pixels.header_values(overlay)).name == "vendor"
    assert matching_rule(rules, pixels.header_values(header(Columns=1280))).name == "wide"
    assert matching_rule(rules, pixels.header_values(header(Columns=800))) is None


def test_the_converter_reads_ctps_script_grammar() -> None:
    """CTP's precedence (! over * over +), its quirks (a space before the parenthesis, // comments) and its
    regions: every (x,y,w,h) between one signature and the next."""
    script = """Library header text

**************
     US
**************
Vendor
 Model A
  { Modality.equals("US") * ManufacturerModelName.containsIgnoreCase ("A1") +
    !Rows.equals("480") * [0008,0070].contains("Acme") // a comment
  }
  (0,0,640,47) (10, 60, 20, 20)

 Model B
  { ( Modality.equals("US") + Modality.equals("OT") ) * true }
  (-100,0,100,30)
"""
    document = converter().convert(script, "0" * 40)
    first, second = document["rules"]
    assert first["name"] == "US / Vendor / Model A"
    assert first["regions"] == [[0, 0, 640, 47], [10, 60, 20, 20]]
    assert first["when"] == {
        "any": [
            {
                "all": [
                    {"attribute": "Modality", "test": "equals", "value": "US"},
                    {"attribute": "ManufacturerModelName", "test": "containsIgnoreCase", "value": "A1"},
                ]
            },
            {
                "all": [
                    {"not": {"attribute": "Rows", "test": "equals", "value": "480"}},
                    {"attribute": "Manufacturer", "test": "contains", "value": "Acme"},
                ]
            },
        ]
    }
    assert second["name"] == "US / Vendor / Model B"
    assert second["regions"] == [[-100, 0, 100, 30]]
    rules = parse_rules(document)
    assert matching_rule(rules, pixels.header_values(header(Modality="OT"))) is rules[1]
    assert matching_rule(rules, pixels.header_values(header(Manufacturer="Acme", Rows=600))) is rules[0]
    assert matching_rule(rules, pixels.header_values(header(Manufacturer="Acme", Rows=480))) is None


def test_the_converter_refuses_what_it_does_not_understand() -> None:
    module = converter()
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        module.convert('{ Manufacturr.equals("x") }\n(0,0,1,1)', "0" * 40)
    with pytest.raises(ValueError, match="no method"):
        module.convert('{ Modality.looksLike("x") }\n(0,0,1,1)', "0" * 40)
    with pytest.raises(ValueError, match="not a region"):
        module.convert('{ Modality.equals("x") }\n(0,0,1)', "0" * 40)


def test_a_region_is_clipped_to_the_image_and_negative_offsets_count_from_the_far_edge() -> None:
    assert Region(0, 0, 1024, 60).within(480, 640) == Region(0, 0, 640, 60)
    assert Region(-100, -20, 100, 30).within(480, 640) == Region(540, 460, 100, 20)
    assert Region(700, 0, 10, 10).within(480, 640) is None


def test_blanking_zeroes_each_region_in_every_frame_and_sample_and_nothing_else() -> None:
    frames = np.random.default_rng(1).integers(1, 255, size=(3, 40, 50, 3), dtype=np.uint8)
    cleaned, done = pixel_arrays.blank(
        frames, (Region(0, 0, 50, 5), Region(45, 30, 20, 20), Region(60, 0, 5, 5))
    )
    assert done == (Region(0, 0, 50, 5), Region(45, 30, 5, 10))
    assert not cleaned[:, :5].any() and not cleaned[:, 30:, 45:].any()
    untouched = np.ones(frames.shape, dtype=bool)
    untouched[:, :5] = False
    untouched[:, 30:, 45:] = False
    assert (cleaned[untouched] == frames[untouched]).all()
    assert frames[:, :5].all(), "the input is not changed"


def test_pydicom_arrays_of_any_shape_become_frames_rows_columns_samples() -> None:
    assert pixel_arrays.as_frames(np.zeros((4, 5)), 1, 1).shape == (1, 4, 5, 1)
    assert pixel_arrays.as_frames(np.zeros((4, 5, 3)), 1, 3).shape == (1, 4, 5, 3)
    assert pixel_arrays.as_frames(np.zeros((2, 4, 5)), 2, 1).shape == (2, 4, 5, 1)
    assert pixel_arrays.as_frames(np.zeros((2, 4, 5, 3)), 2, 3).shape == (2, 4, 5, 3)
    with pytest.raises(ValueError):
        pixel_arrays.as_frames(np.zeros((3, 4, 5)), 2, 1)


def test_a_long_series_is_shown_as_sampled_frames_and_its_darkest_and_brightest_pixels() -> None:
    frames = np.zeros((10, 8, 8, 1), dtype=np.uint16)
    frames[4, 2, 2, 0] = 4000  # bright text in a frame the sampling skips
    views = pixel_arrays.ocr_views(frames)
    assert [label for label, _ in views][:4] == ["frame 1", "frame 4", "frame 7", "frame 10"]
    brightest = dict(views)["each pixel's brightest over all frames"]
    assert brightest.dtype == np.uint8 and brightest[2, 2] == 255
    assert len(pixel_arrays.ocr_views(frames[:3])) == 3


def test_only_confident_strings_of_two_letters_or_digits_count_as_text() -> None:
    assert counts_as_text("ID 1234", 0.9)
    assert not counts_as_text("M", 0.99)
    assert not counts_as_text("-.", 0.99)
    assert not counts_as_text("DOE", 0.3)
    assert box_around([[10.2, 5.0], [40.0, 5.0], [40.0, 17.9], [10.2, 17.9]]) == TextBox(10, 5, 31, 13)


class ReportsBoxes:
    """An OCR engine that reports the boxes it is given, for every image."""

    name = "fake-ocr"

    def __init__(self, *boxes: TextBox) -> None:
        self.boxes = list(boxes)
        self.shown: list[tuple[int, ...]] = []

    def find_text(self, image: np.ndarray) -> list[TextBox]:
        self.shown.append(image.shape)
        return list(self.boxes)


def ultrasound(model: str = "CX50", rows: int = 600, marked: str | None = None) -> pydicom.Dataset:
    ds = header(
        SOPClassUID=US_SOP_CLASS,
        SOPInstanceUID=generate_uid(),
        Modality="US",
        Manufacturer="Philips Medical Systems",
        ManufacturerModelName=model,
        Rows=rows,
        Columns=800,
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelRepresentation=0,
    )
    if marked is not None:
        ds.BurnedInAnnotation = marked
    ds.PixelData = np.full((rows, 800), 90, dtype=np.uint8).tobytes()
    return ds


def test_marked_yes_without_a_rule_stays_quarantined_whatever_the_ocr_says() -> None:
    finder = ReportsBoxes()
    result = pixels.check_burned_in(
        ultrasound(rows=350, marked="YES"), "Burned In Annotation is YES", shipped_rules(), finder, 1 << 30
    )
    assert isinstance(result, Quarantined) and result.reason == "BurnedInAnnotation"
    assert "no pixel rule" in result.detail and "CX50" in result.detail
    assert finder.shown == [], "not even looked at: YES says text is there, nothing says where"


def test_without_an_ocr_engine_nothing_suspected_is_kept() -> None:
    result = pixels.check_burned_in(ultrasound(rows=350), "suspected", shipped_rules(), None, 1 << 30)
    assert isinstance(result, Quarantined) and "no OCR engine" in result.detail


def test_text_the_ocr_finds_quarantines_with_its_boxes_and_never_its_words() -> None:
    finder = ReportsBoxes(TextBox(100, 300, 80, 14))
    result = pixels.check_burned_in(ultrasound(), "suspected", shipped_rules(), finder, 1 << 30)
    assert isinstance(result, Quarantined) and result.reason == "BurnedInText"
    assert "frame 1 (x=100, y=300, width=80, height=14)" in result.detail
    assert "pixel rule 'US / Philips / CX50'" in result.detail


def test_a_covered_file_the_ocr_passes_is_blanked_written_natively_and_reported() -> None:
    ds = ultrasound()
    finder = ReportsBoxes()
    result = pixels.check_burned_in(ds, "suspected", shipped_rules(), finder, 1 << 30)
    assert isinstance(result, pixels.PixelsChecked)
    assert result.blanked == (Region(0, 0, 800, 59),)
    assert finder.shown == [(600, 800)], "the engine sees the blanked pixels"
    written = ds.pixel_array
    assert not written[:59].any() and (written[59:] == 90).all()
    assert ds.BurnedInAnnotation == "NO"
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert [c.attribute for c in result.cleaned()] == ["PixelData"]
    assert "(x=0, y=0, width=800, height=59)" in result.cleaned()[0].identifier


def test_a_suspected_file_no_rule_covers_is_kept_unchanged_when_the_ocr_finds_nothing() -> None:
    ds = ultrasound(rows=350)
    before = ds.PixelData
    result = pixels.check_burned_in(ds, "suspected", shipped_rules(), ReportsBoxes(), 1 << 30)
    assert isinstance(result, pixels.PixelsChecked) and result.blanked == () and result.rule is None
    assert ds.PixelData == before and "BurnedInAnnotation" not in ds


def test_pixels_that_would_decode_past_the_limit_are_not_decoded() -> None:
    result = pixels.check_burned_in(ultrasound(), "suspected", shipped_rules(), ReportsBoxes(), 1000)
    assert isinstance(result, Quarantined) and result.reason == "TooLarge"


def test_the_clean_pixel_data_option_joins_the_method_codes_in_order() -> None:
    ds = Dataset()
    ds.DeidentificationMethod = ["cleanroom", "PS3.15 E Basic Profile"]
    codes = []
    for value in ("113100", "113105"):
        item = Dataset()
        item.CodeValue = value
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
    pixels.mark_cleaned(ds)
    pixels.mark_cleaned(ds)
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100", "113101", "113105"]
    assert list(ds.DeidentificationMethod) == ["cleanroom", "PS3.15 E Basic Profile", "CleanPixelData"]
