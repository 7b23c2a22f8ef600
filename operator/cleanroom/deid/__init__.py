"""Pure de-identification of DICOM under PS3.15 Annex E: profile as data, keyed pseudonyms, residual-PHI scan.

The names that need pydicom (the reference codec ``engine``) are imported on first use: de-identifying
files on their encoded bytes never loads pydicom, numpy or Pillow (``deid.dictionary`` says why)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cleanroom.deid.clean_file import CleanFile, Quarantined
from cleanroom.deid.files import deidentify_bytes
from cleanroom.deid.keys import KeyError_, Keyring, key_from_bytes
from cleanroom.deid.policy import DeidConfig, Policy, compile_policy
from cleanroom.deid.profile import Action, compile_profile, table

if TYPE_CHECKING:
    from cleanroom.deid.engine import Kept, Outcome, burned_in_reason, deidentify

_FROM_ENGINE = frozenset({"Kept", "Outcome", "burned_in_reason", "deidentify"})

__all__ = [
    "Action",
    "CleanFile",
    "DeidConfig",
    "Kept",
    "KeyError_",
    "Keyring",
    "Outcome",
    "Policy",
    "Quarantined",
    "burned_in_reason",
    "compile_policy",
    "compile_profile",
    "deidentify",
    "deidentify_bytes",
    "key_from_bytes",
    "table",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_ENGINE:
        return getattr(importlib.import_module("cleanroom.deid.engine"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
