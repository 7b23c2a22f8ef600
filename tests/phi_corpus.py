"""A planted-PHI corpus built from pydicom's bundled files and the pydicom-data package: identifiers in
every category of Table E.1-1, nested three sequence levels deep, in private tags and private sequences, in
SR text, in overlay comments, in a deflated file, in a JPEG 2000 file, one identifier repeated inside an
attribute the profile keeps, one in the file meta, and identifiers written otherwise (VARIANTS: other case,
order, separators, diacritics, date forms) in text the profile keeps.

Every planted identifier is one of TOKENS; after de-identification none may appear anywhere in the output.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from tests import dicom_samples

FAMILY = "Zorgbrecht"
GIVEN = "Wilhelmina"
PATIENT_ID = "MRN77341"
OTHER_ID = "NHS9988123"
BIRTH_DATE = "19610214"
ACCESSION = "ACC99817"
ADDRESS = "Quellenweg"
PHYSICIAN = "Vanderhoeven"
INSTITUTION = "Zorgziekenhuis"
SERIAL = "SN4471829"
STATION = "CTSTATION77"
TOKENS = (
    FAMILY,
    GIVEN,
    PATIENT_ID,
    OTHER_ID,
    BIRTH_DATE,
    ACCESSION,
    ADDRESS,
    PHYSICIAN,
    INSTITUTION,
    SERIAL,
    STATION,
)


@dataclass(frozen=True)
class Variant:
    """An identifier of the original header written otherwise in Window Center & Width Explanation, which
    Table E.1-1 does not list: the file is kept, the text cleaned, and the cleaning names one of ``sources``."""

    name: str
    text: str
    sources: tuple[str, ...]
    header: tuple[tuple[str, str], ...] = ()
    character_set: str = "ISO_IR 100"

    @property
    def file(self) -> str:
        return f"variant-{self.name}.dcm"


STUDY_DATES = ("StudyDate", "SeriesDate", "ContentDate", "AcquisitionDateTime")
VARIANTS = (
    Variant("name-other-case-and-order", "LI NA", ("PatientName",), (("PatientName", "Na^Li"),)),
    Variant("name-reversed-with-comma", "W/L for Na, Li", ("PatientName",), (("PatientName", "Li^Na"),)),
    Variant("name-separators", f"{GIVEN.upper()}_{FAMILY.lower()}", ("PatientName",)),
    Variant("name-transliterated", "JUERGENSEN", ("PatientName",), (("PatientName", "Jürgensen^Anna"),)),
    Variant(
        "name-diacritics-dropped", "Dr Jurgensen", ("PatientName",), (("PatientName", "Jürgensen^Anna"),)
    ),
    Variant("name-diacritics-added", "Müller", ("PatientName",), (("PatientName", "Mueller^Hans"),)),
    Variant(
        "name-utf8", "JÜRGENSEN, Ånna", ("PatientName",), (("PatientName", "Jürgensen^Ånna"),), "ISO_IR 192"
    ),
    Variant("name-cyrillic", "ИВАНОВ И.", ("PatientName",), (("PatientName", "Иванов^Иван"),), "ISO_IR 144"),
    Variant("id-with-separator", "ref MRN-77341", ("PatientID",)),
    Variant("id-lower-case-spaced", "mrn 77341", ("PatientID",)),
    Variant("date-dotted", "born 14.02.1961", ("PatientBirthDate",)),
    Variant("date-slashed", "1961/02/14", ("PatientBirthDate",)),
    Variant("date-words", "14 Feb 1961", ("PatientBirthDate",)),
    Variant("date-iso", "scanned 2024-03-01", STUDY_DATES),
)


@dataclass(frozen=True)
class CorpusFile:
    name: str
    path: Path
    expect_quarantine: str = ""


def _plant(ds: Dataset, study_uid: str, series_uid: str) -> Dataset:
    ds.PatientName = f"{FAMILY}^{GIVEN}"
    ds.PatientID = PATIENT_ID
    ds.OtherPatientIDs = OTHER_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientAddress = f"12 {ADDRESS} Rotterdam"
    ds.PatientSex = "F"
    ds.PatientAge = "063Y"
    ds.AccessionNumber = ACCESSION
    ds.ReferringPhysicianName = f"{PHYSICIAN}^Jan"
    ds.PerformingPhysicianName = f"{PHYSICIAN}^Jan"
    ds.OperatorsName = f"{PHYSICIAN}^Piet"
    ds.InstitutionName = f"Sint {INSTITUTION}"
    ds.InstitutionAddress = f"1 {ADDRESS} Rotterdam"
    ds.StationName = STATION
    ds.DeviceSerialNumber = SERIAL
    ds.StudyDescription = f"CT thorax for {FAMILY}"
    ds.SeriesDescription = f"axial {GIVEN} {FAMILY}"
    ds.ImageComments = f"patient {PATIENT_ID} moved"
    ds.StudyID = ACCESSION
    ds.StudyDate = "20240301"
    ds.SeriesDate = "20240301"
    ds.ContentDate = "20240301"
    ds.AcquisitionDateTime = "20240301101500"
    ds.StudyTime = "101500"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.FrameOfReferenceUID = generate_uid()
    # Three sequence levels deep: Request Attributes > Referenced Study > Content > Person Name.
    level3 = Dataset()
    level3.PersonName = f"{FAMILY}^{GIVEN}"
    level3.TextValue = f"requested by {PHYSICIAN}"
    level2 = Dataset()
    level2.ReferencedSOPInstanceUID = study_uid
    level2.ContentSequence = Sequence([level3])
    level1 = Dataset()
    level1.RequestedProcedureDescription = f"CT for {FAMILY}"
    level1.ReferencedStudySequence = Sequence([level2])
    ds.RequestAttributesSequence = Sequence([level1])
    # Private attributes and a private sequence.
    block = ds.private_block(0x0011, "ACME HOSPITAL INC", create=True)
    block.add_new(0x01, "LO", f"{FAMILY} {PATIENT_ID}")
    inner = Dataset()
    inner.PatientID = OTHER_ID
    block.add_new(0x02, "SQ", Sequence([inner]))
    # Overlay with a comment.
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\xff" * 8)
    ds.add_new(0x60004000, "LT", f"marked by {PHYSICIAN}")
    ds.BurnedInAnnotation = "NO"
    return ds


def build(directory: Path) -> list[CorpusFile]:
    """Write the corpus into ``directory``; return each file with the quarantine reason it must get ('' = kept)."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    files: list[CorpusFile] = []

    ct = _plant(pydicom.dcmread(get_testdata_file("CT_small.dcm")), study_uid, series_uid)
    files.append(_save(ct, directory / "ct-1.dcm"))

    # A second CT slice that references the first (Source Image Sequence): references must still resolve.
    ct2 = _plant(pydicom.dcmread(get_testdata_file("CT_small.dcm")), study_uid, series_uid)
    source = Dataset()
    source.ReferencedSOPClassUID = ct.SOPClassUID
    source.ReferencedSOPInstanceUID = ct.SOPInstanceUID
    ct2.SourceImageSequence = Sequence([source])
    files.append(_save(ct2, directory / "ct-2.dcm"))

    mr = _plant(pydicom.dcmread(get_testdata_file("MR_small.dcm")), study_uid, generate_uid())
    files.append(_save(mr, directory / "mr-1.dcm"))

    deflated = _plant(pydicom.dcmread(get_testdata_file("CT_small.dcm")), study_uid, generate_uid())
    files.append(_save(deflated, directory / "ct-deflated.dcm", DeflatedExplicitVRLittleEndian))

    # From the pydicom-data package: a Siemens MR with its own overlays and private groups, a JPEG 2000
    # (encapsulated) MR and a segmentation (SEG) of a liver.
    for name in ("MR-SIEMENS-DICOM-WithOverlays.dcm", "emri_small_jpeg_2k_lossless.dcm", "liver.dcm"):
        sample = pydicom.dcmread(dicom_samples.pydicom_data_file(name))
        syntax = sample.file_meta.TransferSyntaxUID
        files.append(_save(_plant(sample, study_uid, generate_uid()), directory / f"data-{name}", syntax))

    sr = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    sr = _plant(sr, study_uid, generate_uid())
    for key in [t for t in list(sr.keys()) if t.group == 0x6000]:
        del sr[key]
    text = Dataset()
    text.ValueType = "TEXT"
    text.TextValue = f"Patient {GIVEN} {FAMILY} ({PATIENT_ID}), born {BIRTH_DATE}, seen at {INSTITUTION}."
    sr.ContentSequence = Sequence([*(sr.get("ContentSequence") or []), text])
    files.append(_save(sr, directory / "sr-1.dcm"))

    kept = _plant(pydicom.dcmread(get_testdata_file("CT_small.dcm")), study_uid, generate_uid())
    kept.ConvolutionKernel = FAMILY  # not in Table E.1-1, so the profile keeps it: it must be cleaned
    files.append(_save(kept, directory / "ct-kept-attribute.dcm"))

    burned = _plant(pydicom.dcmread(get_testdata_file("CT_small.dcm")), study_uid, generate_uid())
    burned.BurnedInAnnotation = "YES"
    files.append(_save(burned, directory / "ct-burned-in.dcm", expect_quarantine="BurnedInAnnotation"))

    truncated = directory / "ct-truncated.dcm"
    truncated.write_bytes((directory / "ct-1.dcm").read_bytes()[:3000])
    files.append(CorpusFile("ct-truncated.dcm", truncated, expect_quarantine="Unreadable"))

    cut_pixels = directory / "ct-truncated-pixels.dcm"
    whole = (directory / "ct-1.dcm").read_bytes()
    cut_pixels.write_bytes(whole[: len(whole) - 5000])
    files.append(CorpusFile("ct-truncated-pixels.dcm", cut_pixels, expect_quarantine="Unreadable"))

    # Attributes Table E.1-1 does not list: free text naming the institution, and a date.
    unlisted = _plant(pydicom.dcmread(get_testdata_file("CT_small.dcm")), study_uid, generate_uid())
    unlisted.WindowCenterWidthExplanation = f"as set at {INSTITUTION}"
    unlisted.StudyUpdateDateTime = "20240302120000"
    files.append(_save(unlisted, directory / "ct-unlisted.dcm"))

    # The file meta is not cleaned (only its Source AE Title is replaced): an identifier there quarantines.
    meta = _plant(pydicom.dcmread(get_testdata_file("CT_small.dcm")), study_uid, generate_uid())
    meta.file_meta.ImplementationVersionName = FAMILY
    files.append(_save(meta, directory / "ct-meta-identifier.dcm", expect_quarantine="ResidualIdentifier"))

    for variant in VARIANTS:
        planted = _plant(pydicom.dcmread(get_testdata_file("CT_small.dcm")), study_uid, generate_uid())
        planted.SpecificCharacterSet = variant.character_set
        for keyword, value in variant.header:
            setattr(planted, keyword, value)
        planted.WindowCenterWidthExplanation = variant.text
        files.append(_save(planted, directory / variant.file))

    notes = directory / "notes.txt"
    notes.write_text(f"{FAMILY} {PATIENT_ID}\n")
    files.append(CorpusFile("notes.txt", notes, expect_quarantine="NotDicom"))
    return files


def _save(
    ds: Dataset, path: Path, syntax: str = ExplicitVRLittleEndian, expect_quarantine: str = ""
) -> CorpusFile:
    ds = copy.deepcopy(ds)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    return CorpusFile(path.name, path, expect_quarantine)
