"""Operator-wide kopf settings."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from cleanroom.api import GROUP


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our CRDs prune unknown status fields, so kopf's bookkeeping lives in annotations under our group.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    # Handlers are synchronous and do API calls; the default pool (a few threads on a small node) lets timers
    # and pod events of many workspaces starve a Dataset's revocation fan-out.
    settings.execution.max_workers = 32
