"""Thin kopf handlers. Importing this package registers them with kopf's default registry."""

from cleanroom.handlers import settings, workspace

__all__ = ["settings", "workspace"]
