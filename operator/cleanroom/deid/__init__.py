"""Pure de-identification of DICOM under PS3.15 Annex E: profile as data, keyed pseudonyms, residual-PHI scan."""

from cleanroom.deid.clean_file import CleanFile
from cleanroom.deid.engine import Kept, Outcome, Quarantined, burned_in_reason, deidentify
from cleanroom.deid.files import deidentify_bytes
from cleanroom.deid.keys import KeyError_, Keyring, key_from_bytes
from cleanroom.deid.policy import DeidConfig, Policy, compile_policy
from cleanroom.deid.profile import Action, compile_profile, table

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
