"""What de-identifying one file gives when it can be kept, whichever path cleaned it."""

from __future__ import annotations

from dataclasses import dataclass


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

    @property
    def path(self) -> str:
        """Where the instance lives in a snapshot: patient/study/series/instance.dcm."""
        return f"{self.patient}/{self.study}/{self.series}/{self.instance}.dcm"
