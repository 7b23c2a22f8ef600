"""Residual-PHI scan: after the profile, no known identifier of the patient may remain in any text value.

The identifiers come from the original header (names, IDs, birth date, address, ...), read by either codec
through ``Header``. The scan is a safety net behind the profile, not a replacement for it: a hit quarantines
the file, naming the attribute.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from cleanroom.deid.policy import OTHER_PATIENT_IDS_SEQUENCE, PATIENT_ID, Policy

# Name parts and IDs shorter than this match too much ordinary text to be useful evidence.
MIN_TOKEN_LENGTH = 3
# Values that are placeholders, not identifiers (what other de-identifiers leave behind).
PLACEHOLDERS = frozenset({"ANONYMIZED", "NONE"})
MARKER = "[REMOVED]"


class Header(Protocol):
    """An original header as a codec reads it."""

    def select(
        self, tags: Collection[int], vrs: Collection[str]
    ) -> Iterator[tuple[int | None, int, list[str]]]:
        """(the enclosing sequence's tag or None at the top level, tag, values) of every element at any depth
        whose tag is in ``tags`` or whose VR is in ``vrs``; values as text, one string each."""
        ...


@dataclass(frozen=True)
class Identifiers:
    """What is looked for in a de-identified header: ``patient`` (the people in the original header; a hit
    quarantines) and ``scrubbed`` (those plus the institution and device, taken out of cleaned text)."""

    patient: Scanner
    scrubbed: Scanner


@dataclass(frozen=True)
class Finding:
    attribute: str
    token: str


def gather(policy: Policy, header: Header) -> Identifiers:
    """The people in the original header: the patient's names, IDs, birth date and address, and every person
    name anywhere in it (staff included); and the institution and device unless their retain option is
    chosen. Institution and device names are not evidence of a patient leak (an institution named like the
    scanner's maker is common), so they are only scrubbed, never a reason to quarantine."""
    people: list[str] = []
    context: list[str] = []
    tags = set(policy.identifier_tags) | set(policy.context_tags)
    for parent, tag, texts in header.select(tags, ("PN",)):
        # Trailing NULs pad some writers' values (PS3.5 6.2 allows them only in UIs, but they occur).
        found = [text.strip(" \x00") for text in texts if text.strip(" \x00")]
        if tag in policy.context_tags:
            if parent is None:
                context.extend(found)
        elif (
            parent is None
            or policy.identifier_tags.get(tag, True)  # a person name in a sequence
            or (parent == OTHER_PATIENT_IDS_SEQUENCE and tag == PATIENT_ID)
        ):
            people.extend(found)
    patient = _split(people)
    return Identifiers(patient=scanner(patient), scrubbed=scanner(patient | _split(context)))


def _split(texts: Iterable[str]) -> frozenset[str]:
    tokens: set[str] = set()
    for text in texts:
        tokens.add(text.strip())
        # Names and addresses: each component (family, given, street) on its own as well.
        tokens.update(part.strip() for part in re.split(r"[\^=\s,]+", text))
    return frozenset(
        t
        for t in tokens
        if len(t) >= MIN_TOKEN_LENGTH and any(c.isalnum() for c in t) and t.upper() not in PLACEHOLDERS
    )


class Scanner:
    """Finds and scrubs a set of identifiers in text."""

    def __init__(self, tokens: frozenset[str]) -> None:
        ordered = sorted(tokens, key=len, reverse=True)
        alternatives = "|".join(re.escape(t) for t in ordered)
        self._pattern = (
            re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE)
            if ordered
            else None
        )

    def __bool__(self) -> bool:
        return self._pattern is not None

    def search(self, text: str) -> str | None:
        """The first identifier in ``text``, as written there, or None."""
        if self._pattern is None:
            return None
        match = self._pattern.search(text)
        return match.group(0) if match else None

    def scrub(self, text: str) -> str:
        """``text`` with each identifier replaced (action C on descriptions and structured content)."""
        return text if self._pattern is None else self._pattern.sub(MARKER, text)


@functools.lru_cache(maxsize=256)
def scanner(tokens: frozenset[str]) -> Scanner:
    """The scanner for ``tokens``, compiled once: a series' files share their patient's."""
    return Scanner(tokens)


def scan(texts: Iterable[tuple[str, str]], identifiers: Scanner) -> Finding | None:
    """The first (attribute, text) in ``texts`` that still contains an identifier, if any."""
    for where, text in texts:
        found = identifiers.search(text)
        if found is not None:
            return Finding(attribute=where, token=found)
    return None
