"""Residual-PHI scan: after the profile, no known identifier of the patient may remain in any text value.

The identifiers come from the original header (names, IDs, birth date, address, ...). The scan is a
safety net behind the profile, not a replacement for it: a hit quarantines the file, naming the attribute.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from cleanroom.deid import elements
from cleanroom.deid.values import TEXT_VRS

# Name parts and IDs shorter than this match too much ordinary text to be useful evidence.
MIN_TOKEN_LENGTH = 3
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "AccessionNumber",
    "PatientBirthDate",
    "IssuerOfPatientID",
)


# Who and where, beyond the patient: staff names and the institution and device, unless the matching
# retain option keeps them on purpose (then they are not evidence of a leak).
INSTITUTION_KEYWORDS = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName")
DEVICE_KEYWORDS = ("StationName", "DeviceSerialNumber")


@dataclass(frozen=True)
class Finding:
    attribute: str
    token: str


def identifiers(dataset: Dataset) -> frozenset[str]:
    """The people in the original header: the patient's names, IDs, birth date and address, and every
    person name anywhere in it (staff included). A match of one of these after de-identification quarantines."""
    tokens: set[str] = set()
    person_names = list(_person_names(dataset))
    for keyword in IDENTIFYING_KEYWORDS:
        value = dataset.get(keyword)
        if keyword.endswith("Name"):
            person_names.extend(_values(value))
        else:
            tokens.update(_values(value))
    if dataset.get("OtherPatientIDsSequence"):
        for item in dataset.OtherPatientIDsSequence:
            tokens.update(_values(item.get("PatientID")))
    return _split(person_names + sorted(tokens))


def context_identifiers(
    dataset: Dataset, *, keep_institution: bool = False, keep_device: bool = False
) -> frozenset[str]:
    """Institution and device names, scrubbed out of cleaned text unless their retain option is chosen. They
    are not evidence of a patient leak (an institution named like the scanner's maker is common), so the
    residual scan does not quarantine on them."""
    keywords = ([] if keep_institution else list(INSTITUTION_KEYWORDS)) + (
        [] if keep_device else list(DEVICE_KEYWORDS)
    )
    return _split([text for keyword in keywords for text in _values(dataset.get(keyword))])


def _split(texts: list[str]) -> frozenset[str]:
    tokens: set[str] = set()
    for text in texts:
        tokens.add(text.strip())
        # Names and addresses: each component (family, given, street) on its own as well.
        tokens.update(part.strip() for part in re.split(r"[\^=\s,]+", text))
    return frozenset(
        t
        for t in tokens
        if len(t) >= MIN_TOKEN_LENGTH
        and any(c.isalnum() for c in t)
        and t.upper() not in {"ANONYMIZED", "NONE"}
    )


def _person_names(dataset: Dataset) -> Iterator[str]:
    for tag in list(dataset._dict):
        vr = elements.vr_of(dataset, tag)
        if vr == "SQ":
            for item in elements.sequence_items(dataset, tag):
                yield from _person_names(item)
        elif vr == "PN":
            yield from (part for part in elements.text_of(dataset, tag).split("\\") if part.strip())


def _values(value: object) -> list[str]:
    if value in (None, ""):
        return []
    items = value if isinstance(value, pydicom.multival.MultiValue | list) else [value]
    return [str(item) for item in items if str(item).strip()]


@functools.lru_cache(maxsize=256)
def _pattern(tokens: frozenset[str]) -> re.Pattern[str] | None:
    ordered = sorted(tokens, key=len, reverse=True)
    if not ordered:
        return None
    alternatives = "|".join(re.escape(t) for t in ordered)
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE)


def _text_elements(dataset: Dataset, path: str = "") -> Iterator[tuple[str, str]]:
    for tag in list(dataset._dict):
        vr = elements.vr_of(dataset, tag)
        where = f"{path}{elements.name_of(tag)}"
        if vr == "SQ":
            for index, item in enumerate(elements.sequence_items(dataset, tag)):
                yield from _text_elements(item, f"{where}[{index}].")
        elif vr in TEXT_VRS:
            text = elements.text_of(dataset, tag)
            if text:
                yield where, text


def scan(dataset: Dataset, tokens: frozenset[str]) -> Finding | None:
    """The first text value in ``dataset`` that still contains one of ``tokens``, if any."""
    pattern = _pattern(tokens)
    if pattern is None:
        return None
    for where, text in _text_elements(dataset):
        match = pattern.search(text)
        if match:
            return Finding(attribute=where, token=match.group(0))
    return None


def scrub(text: str, tokens: frozenset[str]) -> str:
    """Replace each known identifier in free text (action C on descriptions and structured content)."""
    pattern = _pattern(tokens)
    return text if pattern is None else pattern.sub("[REMOVED]", text)
