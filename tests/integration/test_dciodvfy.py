"""dciodvfy (dicom3tools, an independent DICOM validator) finds no new errors in de-identified output."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from cleanroom.api import DeidentificationMethod, DeidentificationOption
from cleanroom.deid import CleanFile, DeidConfig, Keyring, deidentify_bytes
from tests import phi_corpus

OPTION_SETS = {
    "basic": frozenset(),
    "modified-dates": frozenset({DeidentificationOption.RETAIN_LONGITUDINAL_MODIFIED_DATES}),
    "clean-everything": frozenset(
        {
            DeidentificationOption.CLEAN_DESCRIPTORS,
            DeidentificationOption.CLEAN_STRUCTURED_CONTENT,
            DeidentificationOption.CLEAN_GRAPHICS,
        }
    ),
}


def errors(path: Path) -> set[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    # UIDs differ after remapping; the error is the same error.
    return {re.sub(r"[0-9][0-9.]{6,}", "<uid>", line) for line in lines}


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_deidentified_files_have_no_new_dciodvfy_errors(
    tmp_path: Path, options: frozenset[DeidentificationOption]
) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy is missing: hack/install-system-deps.sh installs Debian's dicom3tools")
    corpus = phi_corpus.build(tmp_path / "in")
    config = DeidConfig(DeidentificationMethod.PSEUDONYMIZE, Keyring(b"k" * 32), options)
    checked = 0
    for item in corpus:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = deidentify_bytes(item.path.read_bytes(), config)
        if not isinstance(result, CleanFile):
            continue
        output = tmp_path / f"out-{item.name}"
        output.write_bytes(result.data)
        assert errors(output) - errors(item.path) == set(), item.name
        checked += 1
    assert checked >= 5
