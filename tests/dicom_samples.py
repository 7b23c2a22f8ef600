"""DICOM sample files read straight from disk: pydicom's bundled test files and the pydicom-data package.

Never pydicom's get_testdata_files: it also tries to download pydicom-data's files from the internet.
"""

from __future__ import annotations

from pathlib import Path

import data_store  # the pydicom-data package
import pydicom.data


def pydicom_test_files() -> list[Path]:
    return sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))


def pydicom_charset_files() -> list[Path]:
    """pydicom's files in each character set (PS3.5 Annex H, I, J examples and more)."""
    return sorted((Path(pydicom.data.__file__).parent / "charset_files").glob("*.dcm"))


def pydicom_data_files() -> list[Path]:
    return sorted((Path(data_store.__file__).parent / "data").glob("*.dcm"))


def pydicom_data_file(name: str) -> Path:
    path = Path(data_store.__file__).parent / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not in the pydicom-data package")
    return path
