"""Identifiers of the original header, and finding them again in text that is kept.

The identifiers come from the original header, read by either codec through ``Header``: the patient's
names, IDs, address and birth date, every person name (staff included), and every date the policy removes
or shifts. After the profile, kept text that still holds one of them is cleaned (the identifier replaced by
a marker) rather than the file dropped; each hit names the attribute it was found in and the attribute of
the original header it came from.

Text is compared folded: upper case, diacritics stripped (``Müller`` is ``MULLER``), with the German
transliterations read both ways (``Mueller`` is ``Müller``). Names match part by part and as a whole in any
order with any separators (``Li^Na`` is found as ``LI NA`` or ``Na, Li``); IDs match with or without
separators (``MRN0042`` as ``MRN-0042``); dates match in the common free-text forms (``1980-01-02``,
``02.01.1980``, ``1980/01/02``, ``01/02/1980``, ``2 Jan 1980``).
"""

from __future__ import annotations

import enum
import functools
import itertools
import re
import unicodedata
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from cleanroom.deid.keys import PSEUDONYM_PREFIX
from cleanroom.deid.policy import Policy, attribute_name
from cleanroom.deid.values import DUMMY_BY_VR, DUMMY_TEXT

# Whatever their tag (private ones too), attributes of these VRs are read for the patient's names and dates.
IDENTIFIER_VRS = ("PN", "DA", "DT")
# Name parts and IDs shorter than this match too much ordinary text to be evidence on their own; a short
# part is still found as part of the whole name.
MIN_TOKEN_LENGTH = 3
# IDs at least this long are also found with separators between their characters (MRN-0042).
MIN_SEPARATED_ID_LENGTH = 5
# Name parts combined in every order, at most; further parts (prefix, suffix) are found on their own.
MAX_NAME_PARTS = 4
# Values that are placeholders, not identifiers (what other de-identifiers leave behind).
# Words that name nobody: dummies, and the prefix of cleanroom's own pseudonyms (a pseudonymized snapshot
# anonymized again gets a new pseudonym with the same prefix).
PLACEHOLDERS = frozenset({"ANONYMIZED", "ANONYMOUS", "NONE", "UNKNOWN", PSEUDONYM_PREFIX.strip("-")})
_FOLDED_SPECIALS = {"ß": "SS", "æ": "AE", "œ": "OE", "ø": "O", "đ": "D", "ł": "L", "þ": "TH", "\u0131": "I"}
_TRANSLITERATIONS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})
_UNTRANSLITERATED = (("AE", "A"), ("OE", "O"), ("UE", "U"))
_SEPARATORS = re.compile(r"[\^=\s,]+")
# A letter or digit of any script, and anything else; folded text is compared with these as word boundaries.
WORD, SEPARATOR = r"[^\W_]", r"[\W_]"
_NAME_SEPARATORS = re.compile(SEPARATOR + "+")
MONTHS = (
    ("JAN",),
    ("FEB",),
    ("MAR",),
    ("APR",),
    ("MAY", "MAI"),
    ("JUN",),
    ("JUL",),
    ("AUG",),
    ("SEP",),
    ("OCT", "OKT"),
    ("NOV",),
    ("DEC", "DEZ"),
)


class Header(Protocol):
    """An original header as a codec reads it."""

    def select(
        self, tags: Collection[int], vrs: Collection[str]
    ) -> Iterator[tuple[int | None, int, str, list[str]]]:
        """(the enclosing sequence's tag or None at the top level, tag, VR, values) of every element at any
        depth whose tag is in ``tags`` or whose VR is in ``vrs``; values as text, one string each."""
        ...


class Kind(enum.Enum):
    NAME = "name"  # a person name: its parts, and the whole in any order
    ID = "id"  # an ID, address or phone number: the whole with or without separators, and its words
    DATE = "date"  # a date (YYYYMMDD): the common free-text forms


@dataclass(frozen=True)
class Identifier:
    source: str  # the attribute of the original header it came from, as reports name attributes
    kind: Kind
    text: str


@dataclass(frozen=True)
class Hit:
    start: int
    end: int
    source: str


@dataclass(frozen=True)
class Identifiers:
    """What is looked for in a de-identified header: ``residual`` (the people and the dates of the original
    header; cleaned out of every kept text) and ``scrubbed`` (those plus the institution and device, taken
    out of text that action C cleans)."""

    residual: Scanner
    scrubbed: Scanner


# The profile's own replacement values identify nobody: a header de-identified before (a derived Dataset
# anonymizes a pseudonymized snapshot) holds them in several attributes, and a dummy date found where another
# dummy was written is no leak.
_DUMMIES = frozenset({DUMMY_TEXT, str(DUMMY_BY_VR["DA"]), str(DUMMY_BY_VR["DT"])})


def gather(policy: Policy, header: Header) -> Identifiers:
    """The identifiers of the original header. Institution and device names are not evidence of a patient
    leak (an institution named like the scanner's maker is common), so they are scrubbed only where the
    profile cleans."""
    people: list[Identifier] = []
    context: list[Identifier] = []
    tags = set(policy.identifier_tags) | set(policy.context_tags)
    for parent, tag, vr, texts in header.select(tags, IDENTIFIER_VRS):
        found = [text for text in (t.strip(" \x00") for t in texts) if text and text not in _DUMMIES]
        kind = Kind.NAME if vr == "PN" else Kind.DATE if vr in ("DA", "DT") else Kind.ID
        if kind is Kind.DATE and tag not in policy.identifier_tags and not policy.hides(tag, vr):
            continue  # a date the profile keeps is no secret
        source = attribute_name(tag)
        if tag in policy.context_tags:
            if parent is None:
                context.extend(Identifier(source, kind, text) for text in found)
        else:
            people.extend(Identifier(source, kind, text[:8] if kind is Kind.DATE else text) for text in found)
    residual = frozenset(people)
    return Identifiers(residual=scanner(residual), scrubbed=scanner(residual | frozenset(context)))


# -- folding ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    special = _FOLDED_SPECIALS.get(char.lower())
    if special is not None:
        return special
    return "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)).upper()


def fold(text: str) -> tuple[str, list[int] | None]:
    """``text`` in upper case without diacritics, and for each of its characters the index of the character
    of ``text`` it came from (None when they are the same: ASCII text)."""
    if text.isascii():
        return text.upper(), None
    folded: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        replacement = _fold_char(char)
        folded.append(replacement)
        origin.extend([index] * len(replacement))
    return "".join(folded), origin


def _variants(text: str) -> set[str]:
    """The folded forms an identifier may be written in: as it is, with ä, ö, ü written ae, oe, ue, and with
    ae, oe, ue read as ä, ö, ü."""
    plain, transliterated = fold(text)[0], fold(text.translate(_TRANSLITERATIONS))[0]
    untransliterated = plain
    for digraph, letter in _UNTRANSLITERATED:
        untransliterated = untransliterated.replace(digraph, letter)
    return {plain, transliterated, untransliterated}


# -- patterns -----------------------------------------------------------------------------------------------


def _words(folded: str, splitter: re.Pattern[str]) -> list[str]:
    return [w for w in splitter.split(folded) if w]


def _is_evidence(word: str) -> bool:
    return len(word) >= MIN_TOKEN_LENGTH and any(c.isalnum() for c in word) and word not in PLACEHOLDERS


def _name_patterns(text: str) -> set[str]:
    found: set[str] = set()
    for variant in _variants(text):
        parts = _words(variant, _NAME_SEPARATORS)
        found.update(re.escape(p) for p in parts if _is_evidence(p))
        whole = parts[:MAX_NAME_PARTS]
        if len(whole) > 1 and "".join(whole) not in PLACEHOLDERS:
            found.update(
                f"{SEPARATOR}+".join(map(re.escape, order)) for order in itertools.permutations(whole)
            )
    return found


def _id_patterns(text: str) -> set[str]:
    found: set[str] = set()
    for variant in _variants(text):
        found.update(re.escape(w) for w in _words(variant, _SEPARATORS) if _is_evidence(w))
        compact = "".join(c for c in variant if c.isalnum())
        if len(compact) >= MIN_SEPARATED_ID_LENGTH and compact not in PLACEHOLDERS:
            found.add(f"{SEPARATOR}?".join(map(re.escape, compact)))
        elif _is_evidence(variant.strip()):
            found.add(re.escape(variant.strip()))
    return found


def _date_patterns(text: str) -> set[str]:
    if len(text) < 8 or not text[:8].isdigit():
        return set()
    year, month, day = text[:4], int(text[4:6]), int(text[6:8])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return set()
    m, d, sep = f"0?{month}", f"0?{day}", "[-/. ]"
    names = "(?:" + "|".join(MONTHS[month - 1]) + r")[A-Z]*\.?"
    return {
        f"{year}[-/.]?{month:02d}[-/.]?{day:02d}",  # 19800102, 1980-01-02, 1980/01/02, 1980.01.02
        f"{year}{sep}{m}{sep}{d}",  # 1980-1-2
        f"{d}{sep}{m}{sep}{year}",  # 02.01.1980, 2/1/1980
        f"{m}{sep}{d}{sep}{year}",  # 01/02/1980
        f"{d}[./]{m}[./]{year[2:]}",  # 02.01.80
        f"{d}(?:ST|ND|RD|TH)?[ .-]*{names}[ ,.-]*{year}",  # 2 Jan 1980, 2. Januar 1980
        f"{names}[ .-]*{d}(?:ST|ND|RD|TH)?[ ,.-]*{year}",  # January 2, 1980
    }


_PATTERNS = {Kind.NAME: _name_patterns, Kind.ID: _id_patterns, Kind.DATE: _date_patterns}


def _compile(alternatives: Iterable[str]) -> re.Pattern[str] | None:
    ordered = sorted(set(alternatives), key=lambda a: (-len(a), a))
    if not ordered:
        return None
    return re.compile(f"(?<!{WORD})(?:{'|'.join(ordered)})(?!{WORD})")


class Scanner:
    """Finds a set of identifiers in text, and cleans them out of it."""

    def __init__(self, identifiers: frozenset[Identifier]) -> None:
        self._each: list[tuple[str, re.Pattern[str]]] = []
        every: set[str] = set()
        for identifier in sorted(identifiers, key=lambda i: (i.source, i.kind.value, i.text)):
            alternatives = _PATTERNS[identifier.kind](identifier.text)
            pattern = _compile(alternatives)
            if pattern is not None:
                self._each.append((identifier.source, pattern))
                every |= alternatives
        self._pattern = _compile(every)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def find(self, text: str) -> list[Hit]:
        """Each identifier in ``text`` (positions in ``text``), the longest first where they overlap."""
        if self._pattern is None:
            return []
        folded, origin = fold(text)
        hits = []
        for match in self._pattern.finditer(folded):
            start, end = match.span()
            if origin is not None:
                start, end = origin[start], origin[end - 1] + 1
            hits.append(Hit(start, end, self._source(match.group(0))))
        return hits

    def _source(self, found: str) -> str:
        return next((source for source, pattern in self._each if pattern.fullmatch(found)), "")

    def search(self, text: str) -> Hit | None:
        """The first identifier in ``text``, or None."""
        if self._pattern is None or self._pattern.search(fold(text)[0]) is None:
            return None
        return self.find(text)[0]

    def replace(self, text: str, marker: str) -> tuple[str, list[Hit]]:
        """``text`` with each identifier replaced by ``marker``, and the hits."""
        hits = self.find(text)
        for hit in reversed(hits):
            text = text[: hit.start] + marker + text[hit.end :]
        return text, hits


@functools.lru_cache(maxsize=256)
def scanner(identifiers: frozenset[Identifier]) -> Scanner:
    """The scanner for ``identifiers``, compiled once: a series' files share their patient's."""
    return Scanner(identifiers)
