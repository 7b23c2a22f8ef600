"""What de-identifying one file gives when it can be kept, whichever path cleaned it."""

from __future__ import annotations

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

    data: bytes
    patient: str
    study: str
    series: str
    instance: str
    modality: str
    body_part: str
    # Identifiers cleaned out of values the profile keeps, or that it cleans (action C).
    cleaned: tuple[Cleaned, ...] = ()

    @property
    def path(self) -> str:
        """Where the instance lives in a snapshot: patient/study/series/instance.dcm."""
        return f"{self.patient}/{self.study}/{self.series}/{self.instance}.dcm"
