"""cleanroom: secure analysis workspaces over de-identified medical imaging data."""

__version__ = "0.1.0"
