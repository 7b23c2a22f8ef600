"""The fast path's data dictionary and character-set table answer as pydicom's do: they are read or copied
from pydicom so that de-identifying on encoded bytes never imports it, and a pydicom upgrade that changed
either would otherwise change outputs silently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom.data
from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from cleanroom.deid import dictionary
from cleanroom.deid.rewrite import CHARACTER_SETS

MULTI_BYTE = {"shift_jis", "iso2022_jp", "iso2022_jp_2", "euc_kr", "iso_ir_58", "GB18030", "GBK", "GB2312"}


def _pydicom_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _repeated(mask: str) -> list[int]:
    """Tags a repeating-group entry ('60xx3000', '002031xx') stands for: each x as 0, 2 and F."""
    return [int(mask.replace("x", digit), 16) for digit in "02EF"]


def test_every_tag_of_the_table_has_pydicoms_keyword_and_vr() -> None:
    for tag in DicomDictionary:
        assert dictionary.vr(tag) == _pydicom_vr(tag), hex(tag)
        assert dictionary.keyword(tag) == keyword_for_tag(tag), hex(tag)


def test_repeating_groups_private_and_unknown_tags_answer_as_pydicoms() -> None:
    tags = [tag for mask in RepeatersDictionary for tag in _repeated(mask)]
    tags += [0x00090010, 0x00091001, 0x00291010, 0x7FE10010, 0x00080000, 0x00180000, 0x00087777, 0xFFFE0001]
    for tag in tags:
        assert dictionary.vr(tag) == _pydicom_vr(tag), hex(tag)
        assert dictionary.keyword(tag) == keyword_for_tag(tag), hex(tag)


def test_keywords_resolve_to_pydicoms_tags() -> None:
    for entry in list(DicomDictionary.values())[::7]:
        assert dictionary.tag(entry[4]) == tag_for_keyword(entry[4])
    assert dictionary.tag("NotAKeyword") is None


def test_character_sets_are_pydicoms_single_byte_sets_and_utf8() -> None:
    pydicoms = {name: codec for name, codec in python_encoding.items() if codec not in MULTI_BYTE}
    assert pydicoms == CHARACTER_SETS


def test_cleaning_a_file_on_its_bytes_loads_no_pydicom_numpy_pillow_ocr_or_minio() -> None:
    """The command a user waits for: a CT slice de-identified on its bytes loads none of them (the OCR
    engine's models, numpy and pydicom are for files whose pixels are checked or that the fast path leaves)."""
    code = """
import sys
path = sys.argv[1]
from cleanroom.api import DeidentificationMethod
from cleanroom.deid import CleanFile, DeidConfig, Keyring, deidentify_bytes
data = open(path, "rb").read()
clean = deidentify_bytes(data, DeidConfig(DeidentificationMethod.ANONYMIZE, Keyring.random()))
assert isinstance(clean, CleanFile), clean
heavy = {"pydicom", "numpy", "PIL", "minio", "rapidocr_onnxruntime", "onnxruntime", "cv2"}
loaded = sorted({m.split(".")[0] for m in sys.modules} & heavy)
print(",".join(loaded))
"""
    path = str(Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm")
    result = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
