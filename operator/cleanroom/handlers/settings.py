"""Operator-wide kopf settings."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from cleanroom._clients.kube import CONNECTIONS as HANDLER_THREADS
from cleanroom.api import GROUP


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our CRDs prune unknown status fields, so kopf's bookkeeping lives in annotations under our group.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Events for people come from explicit kopf.event calls (kopf.info is filtered by this level too); handler
    # log lines at INFO ("Handler succeeded", on every pod and Job change) would flood the namespace's Events
    # and the API server.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    # Handlers are synchronous and do API calls; the default pool (a few threads on a small node) lets timers
    # and pod events of many workspaces starve a Dataset's revocation fan-out.
    settings.execution.max_workers = HANDLER_THREADS
