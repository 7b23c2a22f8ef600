"""The audit service's Prometheus metrics, served at its GET /metrics.

Events received, the chain's length, the age of the newest signed checkpoint (the service signs one every
minute: a growing age means sealing stopped) and failed verifications. Each service has a registry of its
own; the chain's length and the checkpoint's age are read when Prometheus scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cleanroom.audit.spool import CHECKPOINTS, AuditLog


class _TrailState(Collector):
    def __init__(self, log: AuditLog, clock: Callable[[], float]) -> None:
        self._log, self._clock = log, clock

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "cleanroom_audit_chain_length",
            "Records in the hash chain: the newest record's sequence number.",
            value=self._log.head[0],
        )
        checkpoints = self._log.directory / CHECKPOINTS
        if checkpoints.exists():
            # Each checkpoint is appended (and fsynced) to this file: its modification time is the newest's.
            yield GaugeMetricFamily(
                "cleanroom_audit_last_checkpoint_age_seconds",
                "Seconds since the newest signed checkpoint.",
                value=max(0.0, self._clock() - checkpoints.stat().st_mtime),
            )


class ServiceMetrics:
    def __init__(self, log: AuditLog, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self._received = Counter(
            "cleanroom_audit_events_received_total",
            "Events received for the chain, by intake: writers (the services' API) or kubernetes (the API "
            "server's audit webhook); rate() gives events/s.",
            ["intake"],
            registry=self.registry,
        )
        self._verifications = Counter(
            "cleanroom_audit_verifications_total",
            "Verifications of the chain from the officers' page, by result (ok, failed).",
            ["result"],
            registry=self.registry,
        )
        self._verification_failures = Counter(
            "cleanroom_audit_verification_failures_total",
            "Verifications that failed: a broken link or signature, an untrusted key, no trusted key "
            "configured, or a newest checkpoint older than allowed.",
            registry=self.registry,
        )
        self._checkpoint_failures = Counter(
            "cleanroom_audit_checkpoint_failures_total",
            "Scheduled checkpoints that could not be signed (a full disk, for one).",
            registry=self.registry,
        )
        # Every result is shown from the start, at 0: an alert on an increase needs the series to exist.
        for result in ("ok", "failed"):
            self._verifications.labels(result)
        for intake in ("writers", "kubernetes"):
            self._received.labels(intake)
        self.registry.register(_TrailState(log, clock))

    def received(self, intake: str, events: int) -> None:
        self._received.labels(intake).inc(events)

    def verified(self, ok: bool) -> None:
        self._verifications.labels("ok" if ok else "failed").inc()
        if not ok:
            self._verification_failures.inc()

    def checkpoint_failed(self) -> None:
        self._checkpoint_failures.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
