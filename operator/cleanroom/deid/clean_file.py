"""What de-identifying one file gives, whichever path cleaned it: the file kept, or why it is quarantined."""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Cleaned:
    """An identifier of the original header found and replaced in a value: where it was found, and which
    attribute of the original header it came from (never the identifier itself)."""

    attribute: str
    identifier: str

    def to_json(self) -> dict[str, str]:
        return {"attribute": self.attribute, "identifier": self.identifier}


@dataclass(frozen=True)
class CleanFile:
    """A de-identified file and the facts the snapshot manifest records about it."""

    # The file's bytes in order: the cleaned header, then (on the fast path) the pixel data element exactly
    # as it was read, a view into the input. Kept apart, a sink writes them without first copying half a
    # megabyte of pixels into one new buffer (that copy, and the fresh pages it touches, cost as much as
    # cleaning the header).
    parts: tuple[bytes | memoryview, ...]
    patient: str
    study: str
    series: str
    instance: str
    modality: str
    body_part: str
    # Identifiers cleaned out of values the profile keeps, or that it cleans (action C).
    cleaned: tuple[Cleaned, ...] = ()

    @functools.cached_property
    def data(self) -> bytes:
        """The whole file as one bytes object (joined once, when first asked for)."""
        return b"".join(self.parts)

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)

    @property
    def path(self) -> str:
        """Where the instance lives in a snapshot: patient/study/series/instance.dcm."""
        return f"{self.patient}/{self.study}/{self.series}/{self.instance}.dcm"


@dataclass(frozen=True)
class Quarantined:
    """A file that is not kept, and why: ``reason`` for machines, ``detail`` for people, and the attribute
    that holds what could not be cleaned, when one does."""

    reason: str
    detail: str
    attribute: str = ""
