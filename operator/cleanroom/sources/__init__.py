"""Readers of raw DICOM: directories, S3 prefixes, DICOMweb servers and other Datasets' snapshots."""

from cleanroom.sources.readers import (
    DEFAULT_MAX_FILE_BYTES,
    DicomWebReader,
    DirectoryReader,
    S3Reader,
    Skipped,
    SnapshotReader,
    SourceError,
    SourceReader,
    TooLarge,
    list_directory,
)

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "DicomWebReader",
    "DirectoryReader",
    "S3Reader",
    "Skipped",
    "SnapshotReader",
    "SourceError",
    "SourceReader",
    "TooLarge",
    "list_directory",
]
