"""No planted identifier survives de-identification; structure, references and pixels do."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest

from cleanroom.api import DeidentificationMethod, DeidentificationOption
from cleanroom.deid import CleanFile, DeidConfig, Keyring, Quarantined, deidentify_bytes
from cleanroom.deid.clean_file import Cleaned
from tests import phi_corpus

KEY = b"site-key-for-tests-0123456789abcdef"
OPTIONS = {
    "basic": frozenset(),
    "modified-dates+descriptors+characteristics": frozenset(
        {
            DeidentificationOption.RETAIN_LONGITUDINAL_MODIFIED_DATES,
            DeidentificationOption.CLEAN_DESCRIPTORS,
            DeidentificationOption.RETAIN_PATIENT_CHARACTERISTICS,
        }
    ),
    "clean-structured-content+graphics": frozenset(
        {DeidentificationOption.CLEAN_STRUCTURED_CONTENT, DeidentificationOption.CLEAN_GRAPHICS}
    ),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[phi_corpus.CorpusFile]:
    return phi_corpus.build(tmp_path_factory.mktemp("planted"))


def run(corpus: list[phi_corpus.CorpusFile], options: frozenset[DeidentificationOption]) -> dict[str, object]:
    config = DeidConfig(DeidentificationMethod.PSEUDONYMIZE, Keyring(KEY), options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {f.name: deidentify_bytes(f.path.read_bytes(), config) for f in corpus}


def run_one(corpus: list[phi_corpus.CorpusFile], name: str) -> CleanFile | Quarantined:
    path = next(f.path for f in corpus if f.name == name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return deidentify_bytes(
            path.read_bytes(), DeidConfig(DeidentificationMethod.PSEUDONYMIZE, Keyring(KEY))
        )


def decoded_text(data: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(data))
    parts: list[str] = []
    ds.walk(lambda _d, e: parts.append(repr(e.value)))
    ds.file_meta.walk(lambda _d, e: parts.append(repr(e.value)))
    return "\n".join(parts)


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_no_planted_token_survives_in_bytes_or_decoded_values(
    corpus: list[phi_corpus.CorpusFile], options: frozenset[DeidentificationOption]
) -> None:
    results = run(corpus, options)
    kept = {name: r for name, r in results.items() if isinstance(r, CleanFile)}
    assert len(kept) >= 5
    for name, clean in kept.items():
        text = decoded_text(clean.data)
        for token in phi_corpus.TOKENS:
            assert token.encode() not in clean.data, f"{token} in the bytes of {name}"
            assert token.lower() not in text.lower(), f"{token} in a decoded value of {name}"


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_every_file_is_kept_or_quarantined_with_its_reason(
    corpus: list[phi_corpus.CorpusFile], options: frozenset[DeidentificationOption]
) -> None:
    results = run(corpus, options)
    assert set(results) == {f.name for f in corpus}
    for f in corpus:
        result = results[f.name]
        if f.expect_quarantine:
            assert isinstance(result, Quarantined), f"{f.name} should be quarantined"
            assert result.reason == f.expect_quarantine, f"{f.name}: {result}"
            assert result.detail
        else:
            assert isinstance(result, CleanFile), f"{f.name}: {result}"


def test_an_identifier_in_a_kept_attribute_is_cleaned_and_the_file_kept(
    corpus: list[phi_corpus.CorpusFile],
) -> None:
    result = run(corpus, frozenset())["ct-kept-attribute.dcm"]
    assert isinstance(result, CleanFile), result
    assert pydicom.dcmread(io.BytesIO(result.data)).ConvolutionKernel == "[CTX]"
    assert Cleaned("ConvolutionKernel", "PatientName") in result.cleaned


def test_an_identifier_that_cannot_be_cleaned_quarantines_and_is_named(
    corpus: list[phi_corpus.CorpusFile],
) -> None:
    result = run(corpus, frozenset())["ct-meta-identifier.dcm"]
    assert isinstance(result, Quarantined)
    assert (result.reason, result.attribute) == ("ResidualIdentifier", "ImplementationVersionName")
    assert "PatientName" in result.detail and phi_corpus.FAMILY not in result.detail


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_text_and_dates_the_table_does_not_list_are_cleaned(
    corpus: list[phi_corpus.CorpusFile], options: frozenset[DeidentificationOption]
) -> None:
    result = run(corpus, options)["ct-unlisted.dcm"]
    assert isinstance(result, CleanFile), result
    out = pydicom.dcmread(io.BytesIO(result.data))
    assert out.WindowCenterWidthExplanation == "as set at [CTX]"
    assert Cleaned("WindowCenterWidthExplanation", "InstitutionName") in result.cleaned
    if DeidentificationOption.RETAIN_LONGITUDINAL_MODIFIED_DATES in options:
        # Moved back by the patient's offset, like the Study Date (1 March to 2 March stays one day).
        assert out.StudyUpdateDateTime.endswith("120000") and out.StudyUpdateDateTime[:8] > out.StudyDate
        assert out.StudyUpdateDateTime[:8] != "20240302"
    else:
        assert out.get("StudyUpdateDateTime", "") == ""
    assert out.Manufacturer == pydicom.dcmread(phi_corpus_path(corpus, "ct-unlisted.dcm")).Manufacturer


def phi_corpus_path(corpus: list[phi_corpus.CorpusFile], name: str) -> Path:
    return next(f.path for f in corpus if f.name == name)


@pytest.mark.parametrize("variant", phi_corpus.VARIANTS, ids=lambda v: v.name)
def test_an_identifier_written_otherwise_in_kept_text_is_cleaned_and_named(
    corpus: list[phi_corpus.CorpusFile], variant: phi_corpus.Variant
) -> None:
    result = run_one(corpus, variant.file)
    assert isinstance(result, CleanFile), result
    value = str(pydicom.dcmread(io.BytesIO(result.data)).WindowCenterWidthExplanation)
    assert variant.text.lower() not in value.lower() and "[CTX]" in value, value
    named = {c.identifier for c in result.cleaned if c.attribute == "WindowCenterWidthExplanation"}
    assert named and named <= set(variant.sources), result.cleaned


def test_structure_references_and_pixels_are_preserved(corpus: list[phi_corpus.CorpusFile]) -> None:
    results = run(corpus, OPTIONS["modified-dates+descriptors+characteristics"])
    by_name = {f.name: f for f in corpus}
    ct1, ct2, mr = (results[n] for n in ("ct-1.dcm", "ct-2.dcm", "mr-1.dcm"))
    assert isinstance(ct1, CleanFile) and isinstance(ct2, CleanFile) and isinstance(mr, CleanFile)
    out1, out2 = pydicom.dcmread(io.BytesIO(ct1.data)), pydicom.dcmread(io.BytesIO(ct2.data))
    in1 = pydicom.dcmread(by_name["ct-1.dcm"].path)
    # Same patient, same study, same series: one pseudonym, one remapped study and series UID.
    assert ct1.patient == ct2.patient == mr.patient
    assert ct1.study == ct2.study == mr.study
    assert ct1.series == ct2.series != mr.series
    assert out1.StudyInstanceUID != in1.StudyInstanceUID and out1.StudyInstanceUID.startswith("2.25.")
    assert len(out1.SOPInstanceUID) <= 64
    # The reference from slice 2 to slice 1 resolves after remapping, file meta included.
    assert out2.SourceImageSequence[0].ReferencedSOPInstanceUID == out1.SOPInstanceUID
    assert out1.file_meta.MediaStorageSOPInstanceUID == out1.SOPInstanceUID
    assert out1.PixelData == in1.PixelData
    # Modified dates: shifted by the same per-patient offset, interval and time of day kept.
    assert out1.StudyDate == out2.StudyDate != in1.StudyDate
    assert out1.LongitudinalTemporalInformationModified == "MODIFIED"
    assert out1.PatientSex == "F" and out1.PatientAge == "063Y"


def test_markers_follow_ps3_15_e_1_1(corpus: list[phi_corpus.CorpusFile]) -> None:
    options = OPTIONS["modified-dates+descriptors+characteristics"]
    result = run(corpus, options)["ct-1.dcm"]
    assert isinstance(result, CleanFile)
    out = pydicom.dcmread(io.BytesIO(result.data))
    assert out.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105", "113107", "113108"]
    assert all(item.CodingSchemeDesignator == "DCM" for item in out.DeidentificationMethodCodeSequence)
    assert "cleanroom" in str(out.DeidentificationMethod[0])


def test_basic_profile_removes_dates_and_private_tags(corpus: list[phi_corpus.CorpusFile]) -> None:
    result = run(corpus, frozenset())["ct-1.dcm"]
    assert isinstance(result, CleanFile)
    out = pydicom.dcmread(io.BytesIO(result.data))
    assert out.StudyDate == ""  # Z under the basic profile
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert not [e for e in out if e.tag.is_private]
    assert not [e for e in out if e.tag.group == 0x6000], "overlay group left incomplete"
    assert "PatientAddress" not in out and "OtherPatientIDs" not in out


def test_deflated_input_is_handled(corpus: list[phi_corpus.CorpusFile]) -> None:
    result = run(corpus, frozenset())["ct-deflated.dcm"]
    assert isinstance(result, CleanFile)


def test_same_key_gives_same_pseudonym_and_uids_another_key_does_not(
    corpus: list[phi_corpus.CorpusFile],
) -> None:
    data = Path(next(f.path for f in corpus if f.name == "ct-1.dcm")).read_bytes()
    a = deidentify_bytes(data, DeidConfig(DeidentificationMethod.PSEUDONYMIZE, Keyring(KEY)))
    b = deidentify_bytes(data, DeidConfig(DeidentificationMethod.PSEUDONYMIZE, Keyring(KEY)))
    c = deidentify_bytes(data, DeidConfig(DeidentificationMethod.PSEUDONYMIZE, Keyring(b"x" * 32)))
    assert isinstance(a, CleanFile) and isinstance(b, CleanFile) and isinstance(c, CleanFile)
    assert (a.patient, a.study, a.instance) == (b.patient, b.study, b.instance)
    assert a.patient != c.patient and a.study != c.study
    assert a.data == b.data


def test_pseudonym_table_is_used_and_a_missing_patient_is_quarantined(
    corpus: list[phi_corpus.CorpusFile],
) -> None:
    data = next(f.path for f in corpus if f.name == "ct-1.dcm").read_bytes()
    table = {phi_corpus.PATIENT_ID: "EUPID-0001"}
    found = deidentify_bytes(
        data, DeidConfig(DeidentificationMethod.PSEUDONYMIZE, Keyring(KEY), pseudonym_table=table)
    )
    assert isinstance(found, CleanFile) and found.patient == "EUPID-0001"
    missing = deidentify_bytes(
        data, DeidConfig(DeidentificationMethod.PSEUDONYMIZE, Keyring(KEY), pseudonym_table={})
    )
    assert isinstance(missing, Quarantined) and missing.reason == "PatientNotInPseudonymTable"


def test_elements_after_the_pixel_data_are_cleaned_too(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    block = ds.private_block(0x7FE1, "GEMS_GENIE_1", create=True)
    block.add_new(0x10, "LO", phi_corpus.FAMILY)
    ds.PatientName = phi_corpus.FAMILY
    path = tmp_path / "after-pixels.dcm"
    ds.save_as(path)
    result = deidentify_bytes(
        path.read_bytes(), DeidConfig(DeidentificationMethod.PSEUDONYMIZE, Keyring(KEY))
    )
    assert isinstance(result, CleanFile)
    assert phi_corpus.FAMILY.encode() not in result.data
    out = pydicom.dcmread(io.BytesIO(result.data))
    assert not [e for e in out if e.tag.group == 0x7FE1]
    assert out.PixelData == ds.PixelData


def test_trailing_padding_is_dropped_and_pixels_copied_byte_for_byte(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    source = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    original = pydicom.dcmread(io.BytesIO(source))
    assert "DataSetTrailingPadding" in original
    result = deidentify_bytes(source, DeidConfig(DeidentificationMethod.ANONYMIZE, Keyring.random()))
    assert isinstance(result, CleanFile)
    out = pydicom.dcmread(io.BytesIO(result.data))
    assert "DataSetTrailingPadding" not in out
    assert out.PixelData == original.PixelData
