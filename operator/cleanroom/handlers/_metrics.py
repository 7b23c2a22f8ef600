"""The operator's Prometheus metrics: reconcile passes, Workspaces by phase, ingest, quarantine, snapshots.

Served by `cleanroom operator --metrics-port` (prometheus_client's own HTTP server, on a port of its own:
kopf's health endpoint takes no other routes). Labels are bounded sets (a resource kind, a phase, an error
or quarantine reason, a Dataset name); no user name, file name or Workspace name becomes a label.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Hashable, Iterator
from typing import ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cleanroom.ingest import IngestResult

P = ParamSpec("P")
R = TypeVar("R")

# The Workspace CRD's status.phase values: each is reported, at 0 when no Workspace is in it, so a dashboard
# and an alert see a phase's count fall to 0 rather than vanish.
WORKSPACE_PHASES = ("Pending", "Starting", "Running", "Stopped", "Expired", "Failed")

RECONCILES = Counter("cleanroom_reconciles_total", "Reconcile passes, by kind of resource.", ["kind"])
RECONCILE_SECONDS = Histogram(
    "cleanroom_reconcile_duration_seconds",
    "How long a reconcile pass took, by kind (a Dataset's includes its ingest).",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
RECONCILE_ERRORS = Counter(
    "cleanroom_reconcile_errors_total",
    "Reconcile passes that failed (and are retried), by kind and error: the failure's reason when it "
    "has one (SourceUnreachable, StorageUnavailable ...), else the exception's class.",
    ["kind", "error"],
)
INGEST_FILES = Counter(
    "cleanroom_ingest_files_total",
    "Source files an ingest run finished, by outcome: kept, quarantined or failed; rate() gives files/s.",
    ["outcome"],
)
INGEST_RATE = Gauge(
    "cleanroom_ingest_files_per_second", "Files per second of each Dataset's last ingest run.", ["dataset"]
)
QUARANTINED = Counter(
    "cleanroom_quarantined_files_total",
    "Files quarantined by de-identification (kept out of every snapshot), by reason.",
    ["reason"],
)
SNAPSHOT_BYTES = Gauge(
    "cleanroom_snapshot_bytes", "Bytes of each Dataset's current published snapshot.", ["dataset"]
)


def _error_name(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, str) and reason.isidentifier() else type(error).__name__


def timed(kind: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count, time and (when it raises) count the error of every call: one reconcile pass of ``kind``."""

    def wrap(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            except Exception as error:
                RECONCILE_ERRORS.labels(kind, _error_name(error)).inc()
                raise
            finally:
                RECONCILES.labels(kind).inc()
                RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)

        return run

    return wrap


def ingested(dataset: str, result: IngestResult, seconds: float) -> None:
    """One finished ingest run of ``dataset``."""
    done = len(result.files) + len(result.quarantined) + len(result.failed)
    INGEST_FILES.labels("kept").inc(len(result.files))
    INGEST_FILES.labels("quarantined").inc(len(result.quarantined))
    INGEST_FILES.labels("failed").inc(len(result.failed))
    for entry in result.quarantined:
        QUARANTINED.labels(entry.reason).inc()
    INGEST_RATE.labels(dataset).set(done / seconds if seconds > 0 else 0.0)


def snapshot_published(dataset: str, size: int) -> None:
    SNAPSHOT_BYTES.labels(dataset).set(size)


class WorkspacePhases(Collector):
    """cleanroom_workspaces{phase}: the phase each Workspace's last pass decided, counted at scrape time."""

    def __init__(self) -> None:
        self._phases: dict[Hashable, str] = {}
        self._lock = threading.Lock()

    def set(self, key: Hashable, phase: str) -> None:
        with self._lock:
            self._phases[key] = phase

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._phases.pop(key, None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = Tally(self._phases.values())
        family = GaugeMetricFamily("cleanroom_workspaces", "Workspaces by phase.", labels=["phase"])
        for phase in (*WORKSPACE_PHASES, *sorted(set(counts) - set(WORKSPACE_PHASES))):
            family.add_metric([phase], counts.get(phase, 0))
        yield family


WORKSPACES = WorkspacePhases()
REGISTRY.register(WORKSPACES)
