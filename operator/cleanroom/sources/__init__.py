"""Readers of raw DICOM: directories, S3 prefixes and DICOMweb servers."""

from cleanroom.sources._readers import (
    DEFAULT_MAX_FILE_BYTES,
    DicomWebReader,
    DirectoryReader,
    ListingOutOfOrder,
    S3Reader,
    Skipped,
    SourceError,
    SourceReader,
    TooLarge,
    list_directory,
    read_at_most,
)

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "DicomWebReader",
    "DirectoryReader",
    "ListingOutOfOrder",
    "S3Reader",
    "Skipped",
    "SourceError",
    "SourceReader",
    "TooLarge",
    "list_directory",
    "read_at_most",
]
