"""What a de-identified instance says about its own de-identification (PS3.15 E.1.1, PS3.16 CID 7050)."""

from __future__ import annotations

from cleanroom.api import DeidentificationOption

BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES: dict[DeidentificationOption, tuple[str, str]] = {
    DeidentificationOption.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    DeidentificationOption.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    DeidentificationOption.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    DeidentificationOption.RETAIN_LONGITUDINAL_FULL_DATES: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    DeidentificationOption.RETAIN_LONGITUDINAL_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    DeidentificationOption.RETAIN_PATIENT_CHARACTERISTICS: (
        "113108",
        "Retain Patient Characteristics Option",
    ),
    DeidentificationOption.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    DeidentificationOption.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    DeidentificationOption.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    DeidentificationOption.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}


def method_codes(options: frozenset[DeidentificationOption]) -> list[tuple[str, str]]:
    """DCM codes for De-identification Method Code Sequence: the basic profile, then each option by code."""
    return [BASIC_PROFILE_CODE, *sorted(OPTION_CODES[o] for o in options)]
