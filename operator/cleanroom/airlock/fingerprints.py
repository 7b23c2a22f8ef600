"""What an export is checked against: the fingerprints of one snapshot's objects.

For each DICOM object of the snapshot: its sha256 (the manifest's digest); for each frame of its pixel data
the sha256 of the frame's bytes as pydicom decodes them, the value hash (`perceptual.value_hash`) of the
stored values and of the modality-LUT values (slope and intercept applied, as most code reads CT), and the
272-bit difference hash; and the identifiers a de-identified header still carries (pseudonyms, UIDs,
accession and study numbers). Built once per snapshot (snapshots never change) and kept as JSON.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cleanroom.airlock.perceptual import HASH_BYTES, difference_hash, value_hash

FINGERPRINTS_KIND = "cleanroom.dev/snapshot-fingerprints"
# Header values a de-identified snapshot still carries that name a patient, study or instance of it.
IDENTIFIER_KEYWORDS = (
    "PatientID",
    "PatientName",
    "OtherPatientIDs",
    "AccessionNumber",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
)
# Shorter values ("1", "CT1") would match any text by chance.
MIN_IDENTIFIER_LENGTH = 8


@dataclass(frozen=True)
class SnapshotFingerprints:
    """Each fingerprint maps to the snapshot path it came from, so that a finding names it."""

    objects: Mapping[str, str] = field(default_factory=dict)
    frame_bytes: Mapping[str, str] = field(default_factory=dict)
    # The byte lengths of the frames: a buffer of unknown shape is cut into frames of these lengths.
    frame_sizes: tuple[int, ...] = ()
    frame_values: Mapping[str, str] = field(default_factory=dict)
    difference_hashes: tuple[tuple[bytes, str], ...] = ()
    identifiers: Mapping[str, str] = field(default_factory=dict)
    # Objects whose pixels could not be decoded (a compression without a decoder here).
    not_decoded: tuple[str, ...] = ()

    @functools.cached_property
    def hash_matrix(self) -> npt.NDArray[np.uint8]:
        if not self.difference_hashes:
            return np.zeros((0, HASH_BYTES), dtype=np.uint8)
        joined = b"".join(h for h, _ in self.difference_hashes)
        return np.frombuffer(joined, dtype=np.uint8).reshape(-1, HASH_BYTES)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": FINGERPRINTS_KIND,
            "objects": dict(self.objects),
            "frameBytes": dict(self.frame_bytes),
            "frameSizes": list(self.frame_sizes),
            "frameValues": dict(self.frame_values),
            "differenceHashes": [[h.hex(), path] for h, path in self.difference_hashes],
            "identifiers": dict(self.identifiers),
            "notDecoded": list(self.not_decoded),
        }


def fingerprints_from_json(document: Mapping[str, Any]) -> SnapshotFingerprints:
    if document.get("kind") != FINGERPRINTS_KIND:
        raise ValueError("not a snapshot fingerprints document")
    return SnapshotFingerprints(
        objects=dict(document["objects"]),
        frame_bytes=dict(document["frameBytes"]),
        frame_values=dict(document["frameValues"]),
        difference_hashes=tuple((bytes.fromhex(h), str(p)) for h, p in document["differenceHashes"]),
        identifiers=dict(document["identifiers"]),
        not_decoded=tuple(document.get("notDecoded", ())),
        frame_sizes=tuple(int(n) for n in document.get("frameSizes", ())),
    )


def fingerprint_snapshot(objects: Iterable[tuple[str, str, bytes]]) -> SnapshotFingerprints:
    """Fingerprints of a snapshot from its objects: (path, digest, bytes) for each."""
    import pydicom

    digests: dict[str, str] = {}
    frame_bytes: dict[str, str] = {}
    frame_values: dict[str, str] = {}
    hashes: list[tuple[bytes, str]] = []
    identifiers: dict[str, str] = {}
    sizes: set[int] = set()
    not_decoded: list[str] = []
    for path, digest, data in objects:
        digests[digest] = path
        try:
            dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        except Exception:
            not_decoded.append(path)
            continue
        for keyword in IDENTIFIER_KEYWORDS:
            for value in _values(dataset.get(keyword)):
                if len(value) >= MIN_IDENTIFIER_LENGTH:
                    identifiers.setdefault(value, f"{keyword} of {path}")
        media = getattr(dataset, "file_meta", None)
        if (
            media is not None
            and len(str(media.get("MediaStorageSOPInstanceUID", ""))) >= MIN_IDENTIFIER_LENGTH
        ):
            identifiers.setdefault(str(media.MediaStorageSOPInstanceUID), f"SOPInstanceUID of {path}")
        if "PixelData" not in dataset:
            continue
        try:
            pixels = dataset.pixel_array
        except Exception:
            not_decoded.append(path)
            continue
        slope = float(dataset.get("RescaleSlope", 1) or 1)
        intercept = float(dataset.get("RescaleIntercept", 0) or 0)
        for frame in _frames(pixels, int(dataset.get("NumberOfFrames", 1) or 1)):
            raw = np.ascontiguousarray(frame).tobytes()
            frame_bytes.setdefault(hashlib.sha256(raw).hexdigest(), path)
            sizes.add(len(raw))
            frame_values.setdefault(value_hash(frame), path)
            if (slope, intercept) != (1.0, 0.0):
                frame_values.setdefault(value_hash(frame.astype(np.float64) * slope + intercept), path)
            hashed = difference_hash(frame)
            if hashed is not None:
                hashes.append((hashed, path))
    return SnapshotFingerprints(
        objects=digests,
        frame_bytes=frame_bytes,
        frame_values=frame_values,
        difference_hashes=tuple(hashes),
        identifiers=identifiers,
        not_decoded=tuple(not_decoded),
        frame_sizes=tuple(sorted(sizes)),
    )


def _values(element: Any) -> list[str]:
    if element is None:
        return []
    if isinstance(element, list | tuple) or type(element).__name__ == "MultiValue":
        return [str(v).strip() for v in element if str(v).strip()]
    text = str(element).strip()
    return [text] if text else []


def _frames(pixels: npt.NDArray[np.generic], frames: int) -> list[npt.NDArray[np.generic]]:
    """Each 2-D frame (grey) or H x W x 3 frame (colour) of a pixel array."""
    if frames > 1 and pixels.ndim >= 3:
        return [pixels[i] for i in range(pixels.shape[0])]
    return [pixels]
