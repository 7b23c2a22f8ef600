"""Thin kopf handlers. Importing this package registers them with kopf's default registry."""

from cleanroom.handlers import dataset, export, settings, workspace

__all__ = ["dataset", "export", "settings", "workspace"]
