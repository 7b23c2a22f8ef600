"""The encoded-bytes path (deid.rewrite) gives the same files as the pydicom path (deid.engine), and steps
aside for everything it does not handle."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from cleanroom.api import DeidentificationMethod, DeidentificationOption
from cleanroom.deid import CleanFile, DeidConfig, Keyring
from cleanroom.deid.files import pixel_element
from cleanroom.deid.pydicom_file import deidentify_with_pydicom
from cleanroom.deid.rewrite import NotHandled, rewrite
from tests import dicom_samples, phi_corpus

KEY = b"site-key-for-tests-0123456789abcdef"
Opt = DeidentificationOption
OPTION_SETS = {
    "basic": frozenset(),
    "dates-modified+descriptors+characteristics": frozenset(
        {Opt.RETAIN_LONGITUDINAL_MODIFIED_DATES, Opt.CLEAN_DESCRIPTORS, Opt.RETAIN_PATIENT_CHARACTERISTICS}
    ),
    "structured-content+graphics": frozenset({Opt.CLEAN_STRUCTURED_CONTENT, Opt.CLEAN_GRAPHICS}),
    "full-dates+uids+device+institution": frozenset(
        {
            Opt.RETAIN_LONGITUDINAL_FULL_DATES,
            Opt.RETAIN_UIDS,
            Opt.RETAIN_DEVICE_IDENTITY,
            Opt.RETAIN_INSTITUTION_IDENTITY,
        }
    ),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The planted-PHI corpus, every DICOM file pydicom ships for its own tests, and pydicom-data's."""
    files = {f.name: f.path.read_bytes() for f in phi_corpus.build(tmp_path_factory.mktemp("planted"))}
    for path in dicom_samples.pydicom_test_files():
        files[f"pydicom/{path.name}"] = path.read_bytes()
    for path in dicom_samples.pydicom_data_files():
        files[f"pydicom-data/{path.name}"] = path.read_bytes()
    for path in dicom_samples.pydicom_charset_files():
        # Secondary captures, which carry burned-in text unless they say NO: said here, so the header is
        # compared rather than quarantined.
        ds = pydicom.dcmread(path)
        ds.BurnedInAnnotation = "NO"
        buffer = io.BytesIO()
        ds.save_as(buffer)
        files[f"charset/{path.name}"] = buffer.getvalue()
    return files


def differences(fast: Dataset, slow: Dataset, where: str = "") -> list[str]:
    """Every attribute whose presence, VR or value differs between the two parsed datasets."""
    found = []
    for tag in sorted(set(fast.keys()) | set(slow.keys())):
        name = f"{where}{tag}"
        if tag not in fast or tag not in slow:
            found.append(f"{name} only in the {'fast' if tag in fast else 'pydicom'} path's file")
            continue
        a, b = fast[tag], slow[tag]
        if a.VR != b.VR:
            found.append(f"{name}: VR {a.VR} != {b.VR}")
        elif a.VR == "SQ":
            if len(a.value) != len(b.value):
                found.append(f"{name}: {len(a.value)} items != {len(b.value)}")
            for index, (x, y) in enumerate(zip(a.value, b.value, strict=False)):
                found.extend(differences(x, y, f"{name}[{index}]."))
        elif _normal(a.value) != _normal(b.value):
            found.append(f"{name}: {a.value!r} != {b.value!r}")
    return found


def _normal(value: Any) -> Any:
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [_normal(v) for v in value]
    return (
        str(value) if type(value).__name__ in ("PersonName", "UID", "IS", "DSfloat", "DSdecimal") else value
    )


def read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


@pytest.mark.parametrize("method", list(DeidentificationMethod))
@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_both_paths_give_the_same_file(
    corpus: dict[str, bytes], options: frozenset[DeidentificationOption], method: DeidentificationMethod
) -> None:
    config = DeidConfig(method, Keyring(KEY), options)
    handled = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, data in corpus.items():
            try:
                fast = rewrite(data, config, pixel_element)
            except NotHandled:
                continue
            handled.append(name)
            slow = deidentify_with_pydicom(data, config)
            assert isinstance(slow, CleanFile), (
                f"{name}: cleaned by the fast path, but the engine says {slow}"
            )
            facts = ("patient", "study", "series", "instance", "modality", "body_part", "cleaned")
            assert [getattr(fast, f) for f in facts] == [getattr(slow, f) for f in facts], name
            fast_ds, slow_ds = read(fast.data), read(slow.data)
            assert differences(fast_ds, slow_ds) == [], name
            assert differences(fast_ds.file_meta, slow_ds.file_meta) == [], name
            assert fast.data[:128] == slow.data[:128] == b"\x00" * 128
        # The planted CT and MR files go the fast way whenever the engine cleans them, and so does a good share
        # of the samples: the comparison above would prove nothing if every file stepped aside.
        for name in ("ct-1.dcm", "ct-2.dcm", "mr-1.dcm", "ct-kept-attribute.dcm"):
            if isinstance(deidentify_with_pydicom(corpus[name], config), CleanFile):
                assert name in handled, name
    # Both header encodings it reads: explicit VR (native and JPEG 2000 pixels) and implicit VR.
    assert {
        "pydicom/CT_small.dcm",
        "pydicom/MR_small_implicit.dcm",
        "pydicom/MR_small_jp2klossless.dcm",
    } <= set(handled), handled
    # Every single-byte character set and UTF-8 (ISO_IR 192) reads on the fast path too.
    assert {
        "charset/chrX1.dcm",  # ISO_IR 192
        "charset/chrFren.dcm",  # ISO_IR 100
        "charset/chrGerm.dcm",  # ISO_IR 100
        "charset/chrGreek.dcm",  # ISO_IR 126
        "charset/chrRuss.dcm",  # ISO_IR 144
        "charset/chrArab.dcm",  # ISO_IR 127
        "charset/chrHbrw.dcm",  # ISO_IR 138
        "variant-name-utf8.dcm",
        "variant-name-cyrillic.dcm",
    } <= set(handled), sorted(handled)
    assert len(handled) >= 30, handled


def test_steps_aside_for_what_only_the_engine_judges(corpus: dict[str, bytes]) -> None:
    config = DeidConfig(DeidentificationMethod.ANONYMIZE, Keyring(KEY))
    for name in (
        "ct-meta-identifier.dcm",  # an identifier that cannot be cleaned: the engine names the attribute
        "ct-burned-in.dcm",
        "ct-truncated.dcm",
        "ct-truncated-pixels.dcm",
        "ct-deflated.dcm",
        "notes.txt",
    ):
        with pytest.raises(NotHandled):
            rewrite(corpus[name], config, pixel_element)
    big_endian = Path(get_testdata_file("MR_small_bigendian.dcm")).read_bytes()
    with pytest.raises(NotHandled, match="transfer syntax"):
        rewrite(big_endian, config, pixel_element)
    with pytest.raises(NotHandled, match="pseudonym table"):
        rewrite(
            corpus["ct-1.dcm"], DeidConfig(config.method, config.keyring, pseudonym_table={}), pixel_element
        )
