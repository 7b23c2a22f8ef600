"""Readers of raw DICOM: directories, S3 prefixes, DICOMweb servers and other Datasets' snapshots."""

from cleanroom.sources.readers import (
    DicomWebReader,
    DirectoryReader,
    S3Reader,
    SnapshotReader,
    SourceError,
    SourceReader,
)

__all__ = ["DicomWebReader", "DirectoryReader", "S3Reader", "SnapshotReader", "SourceError", "SourceReader"]
