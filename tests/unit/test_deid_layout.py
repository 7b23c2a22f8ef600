"""Header layouts remembered between files (deid.layout): a file that shares a layout seen before is split by
slicing, and gives exactly the file it gives when parsed from scratch; anything that differs in the layout
misses it, and every value (and what the policy makes of it) comes from the file in hand."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pydicom
import pytest
from pydicom.data import get_testdata_file

from cleanroom.api import DeidentificationMethod
from cleanroom.deid import CleanFile, DeidConfig, Keyring
from cleanroom.deid.files import pixel_element
from cleanroom.deid.layout import KEPT_LAYOUTS, Layout
from cleanroom.deid.rewrite import LAYOUTS, META_LAYOUTS, NotHandled, rewrite
from tests import dicom_samples

CONFIG = DeidConfig(DeidentificationMethod.PSEUDONYMIZE, Keyring(b"site-key-for-tests-0123456789abcdef"))


@pytest.fixture(autouse=True)
def no_layouts() -> Iterator[None]:
    LAYOUTS.forget()
    META_LAYOUTS.forget()
    yield
    LAYOUTS.forget()
    META_LAYOUTS.forget()


def slice_of(name: str, patient_id: str, model: str, birth: str = "19610214") -> bytes:
    """A CT slice of one series; slices made with values of the same lengths share one layout."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, patient_id, birth
    # Kept by the profile (on the safe list), so only the residual scan keeps a patient's name out of it.
    ds.ManufacturerModelName = model
    # A UID of the same length every time (generate_uid's vary).
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"2.25.{uuid.uuid4().int | 1 << 127}"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def outcome(data: bytes) -> tuple[object, ...]:
    """What rewrite gives for ``data``: the file and its facts, or that (and why) it steps aside."""
    try:
        clean = rewrite(data, CONFIG, pixel_element)
    except NotHandled as error:
        return ("NotHandled", str(error))
    except Exception as error:
        return (type(error).__name__, str(error))
    assert isinstance(clean, CleanFile)
    return (clean.data, clean.patient, clean.study, clean.series, clean.instance, clean.cleaned)


def from_scratch(data: bytes) -> tuple[object, ...]:
    """``outcome`` with no layout remembered, leaving the remembered ones as they were."""
    kept, kept_meta = list(LAYOUTS.layouts), list(META_LAYOUTS.layouts)
    LAYOUTS.forget()
    META_LAYOUTS.forget()
    try:
        return outcome(data)
    finally:
        LAYOUTS.layouts[:], META_LAYOUTS.layouts[:] = kept, kept_meta


def compared(layout: Layout) -> list[int]:
    """Every byte position a layout compares (its headers, and the tag where reading stopped)."""
    return [at for part in layout.headers.__reduce__()[1] for at in range(part.start, part.stop)]


def test_a_changed_value_in_a_remembered_layout_is_still_cleaned() -> None:
    """The attack on a cache: a file that shares a layout with the one before, holding other identifiers."""
    first = slice_of("Zorgbrecht^Wilhelmina", "MRN77341", "Optima CT660")
    # Same lengths everywhere, so the same layout: another patient, whose family name is also in the model.
    second = slice_of("Kwakkelaar^Annelieske", "MRN55102", "Kwakkelaar 1", birth="19700301")
    outcome(first)
    assert len(LAYOUTS.layouts) == 1
    warm = outcome(second)
    assert len(LAYOUTS.layouts) == 1, "the second slice did not take the remembered layout"
    assert warm == from_scratch(second)
    data = warm[0]
    assert isinstance(data, bytes)
    for token in (b"Kwakkelaar", b"KWAKKELAAR", b"Annelieske", b"MRN55102", b"19700301", b"Zorgbrecht"):
        assert token not in data, token
    assert ("ManufacturerModelName", "PatientName") in {(c.attribute, c.identifier) for c in warm[5]}  # type: ignore[attr-defined]
    # The pseudonym is the second patient's, not the first's.
    assert warm[1] == CONFIG.keyring.pseudonym("MRN55102") != from_scratch(first)[1]


def test_a_layout_holds_no_value() -> None:
    outcome(slice_of("Zorgbrecht^Wilhelmina", "MRN77341", "Optima CT660"))
    (layout,) = LAYOUTS.layouts
    for token in (b"Zorgbrecht", b"MRN77341", b"Optima", b"19610214"):
        assert token not in layout.header_bytes


def test_a_changed_length_or_vr_misses_the_remembered_layout() -> None:
    first = slice_of("Zorgbrecht^Wilhelmina", "MRN77341", "Optima CT660")
    outcome(first)
    longer = slice_of("Zorgbrecht^Wilhelmina", "MRN77341", "Optima CT660 XL")
    assert outcome(longer) == from_scratch(longer)
    assert len(LAYOUTS.layouts) == 2
    # The model's VR written SH instead of LO, its length unchanged: another layout.
    at = first.index(b"LO\x0c\x00Optima")
    other_vr = first[:at] + b"SH" + first[at + 2 :]
    assert outcome(other_vr) == from_scratch(other_vr)
    assert len(LAYOUTS.layouts) == 3


def test_every_header_byte_changed_gives_what_a_fresh_parse_gives() -> None:
    """Each byte the layout was read from, flipped in turn, with the original's layout remembered: the file
    (or its stepping aside) is the one parsing from scratch gives."""
    original = slice_of("Zorgbrecht^Wilhelmina", "MRN77341", "Optima CT660")
    outcome(original)
    (layout,), (meta,) = LAYOUTS.layouts, META_LAYOUTS.layouts
    positions = compared(meta) + compared(layout)
    assert len(positions) > 1000
    for at in positions[::3]:
        changed = bytearray(original)
        changed[at] ^= 0x41
        mutated = bytes(changed)
        LAYOUTS.layouts[:], META_LAYOUTS.layouts[:] = [layout], [meta]
        assert outcome(mutated) == from_scratch(mutated), at


def test_truncated_and_extended_files_give_what_a_fresh_parse_gives() -> None:
    original = slice_of("Zorgbrecht^Wilhelmina", "MRN77341", "Optima CT660")
    outcome(original)
    (layout,), (meta,) = LAYOUTS.layouts, META_LAYOUTS.layouts
    for variant in (
        original[: layout.stop + 4],
        original[: layout.stop],
        original[: meta.stop + 4],
        original[: meta.stop],
        original + b"\x00" * 8,
    ):
        LAYOUTS.layouts[:], META_LAYOUTS.layouts[:] = [layout], [meta]
        assert outcome(variant) == from_scratch(variant)


def test_every_sample_file_gives_the_same_file_from_a_remembered_layout() -> None:
    """pydicom's sample files (sequences, implicit VR, encapsulated pixels, undefined lengths), each cleaned
    once from scratch and once more from its remembered layout."""
    seen = 0
    for path in dicom_samples.pydicom_test_files():
        data = path.read_bytes()
        cold = from_scratch(data)
        outcome(data)
        warm = outcome(data)
        assert warm == cold, path.name
        seen += cold[0] != "NotHandled"
    assert seen >= 10


def test_a_changed_transfer_syntax_in_a_remembered_meta_layout_is_read() -> None:
    """Big endian (1.2.840.10008.1.2.2) has the length of explicit little endian: the file meta's layout is
    the same, and the file must still step aside as big endian does."""
    first = slice_of("Zorgbrecht^Wilhelmina", "MRN77341", "Optima CT660")
    outcome(first)
    big = first.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.2\x00", 1)
    assert big != first
    assert outcome(big) == from_scratch(big) == ("NotHandled", "transfer syntax 1.2.840.10008.1.2.2")
    assert len(META_LAYOUTS.layouts) == 1


def test_threads_sharing_the_remembered_layouts_each_get_their_own_file() -> None:
    """The operator cleans a small ingest in its handler's thread, so threads may share the layouts."""
    slices = [
        slice_of("Zorgbrecht^Wilhelmina", "MRN77341", "Optima CT660"),
        slice_of("Kwakkelaar^Annelieske", "MRN55102", "Kwakkelaar 1", birth="19700301"),
        slice_of("Zorgbrecht^Wilhelmina", "MRN77341", "Optima CT660 XL"),
    ]
    expected = [from_scratch(data) for data in slices]
    LAYOUTS.kept = META_LAYOUTS.kept = 1  # every other file misses and replaces the one layout kept
    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda index: (index % 3, outcome(slices[index % 3])), range(60)))
    finally:
        LAYOUTS.kept = META_LAYOUTS.kept = KEPT_LAYOUTS
    for index, result in got:
        assert result == expected[index]
