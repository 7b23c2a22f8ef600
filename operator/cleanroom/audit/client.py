"""The writers' audit client: events go to a local, fsync'd outbox first and are then delivered to the audit
service (`POST /api/v1/events`) with this pod's service-account token, in order, in batches, over TLS checked
against the audit service's CA (`ca_file`; the chart's own CA).

`record` returns once the event is durable locally, so neither an unreachable audit service nor a restart of
the writer loses it; delivery resumes from a durable offset, and because the service stores an event id only
once, a batch re-sent after a crash is not duplicated. The token is read from its file on every delivery:
projected service-account tokens rotate.

Each acknowledgement carries the service's signed receipt (the chain's sequence number and head hash after
the batch, and the service's receive time); the client keeps every receipt in `receipts.jsonl` beside the
outbox. They are witnesses held outside the audit service: `cleanroom audit verify --receipts` checks the
trail against them, so whoever holds the service cannot rewrite what a writer was told was stored."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import urllib.request
from pathlib import Path

from cleanroom._clients.tls import client_context
from cleanroom.audit.events import AuditEvent
from cleanroom.audit.spool import write_durably

LOGGER = logging.getLogger("cleanroom.audit.client")
OUTBOX, SENT, RECEIPTS = "outbox.jsonl", "outbox.sent", "receipts.jsonl"
BATCH = 500


class AuditClient:
    def __init__(
        self,
        url: str,
        token_file: str | Path,
        outbox: str | Path,
        timeout: float = 10.0,
        *,
        ca_file: str | Path = "",
    ) -> None:
        self.url = url.rstrip("/") + "/api/v1/events"
        # The service's certificate is issued by the chart's CA, not a public one.
        self.tls = client_context(str(ca_file)) if ca_file else None
        self.token_file = Path(token_file)
        self.directory = Path(outbox)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._wake = threading.Event()
        self._sender: threading.Thread | None = None

    def record(self, event: AuditEvent) -> None:
        _append_durably(self.directory / OUTBOX, json.dumps(event.to_json(), sort_keys=True).encode())
        self._wake.set()

    def receipts(self) -> list[str]:
        """The service's signed receipts for what this writer delivered, oldest first."""
        path = self.directory / RECEIPTS
        return path.read_text().split() if path.exists() else []

    def pending(self) -> int:
        return len(self._unsent()[1])

    def _unsent(self) -> tuple[int, list[bytes]]:
        sent = int((self.directory / SENT).read_text()) if (self.directory / SENT).exists() else 0
        path = self.directory / OUTBOX
        if not path.exists():
            return sent, []
        with path.open("rb") as outbox:
            outbox.seek(sent)
            lines = [line for line in outbox.read().splitlines(keepends=True) if line.endswith(b"\n")]
        return sent, lines

    def deliver(self) -> int:
        """Send what is pending; returns how many events the service acknowledged. Raises when it cannot
        deliver (the outbox keeps them)."""
        delivered = 0
        while True:
            offset, lines = self._unsent()
            if not lines:
                return delivered
            batch = lines[:BATCH]
            body = json.dumps({"events": [json.loads(line) for line in batch]}).encode()
            request = urllib.request.Request(
                self.url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {self.token_file.read_text().strip()}",
                },
            )
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.tls) as response:
                if response.status != 201:
                    raise RuntimeError(f"the audit service answered {response.status}")
                receipt = json.loads(response.read() or b"{}").get("receipt")
            if receipt:
                _append_durably(self.directory / RECEIPTS, str(receipt).encode())
            write_durably(self.directory / SENT, str(offset + sum(len(line) for line in batch)).encode())
            delivered += len(batch)

    def start(self, period: float = 2.0) -> None:
        """Deliver in a background thread: at once after each record, and every `period` seconds."""
        if self._sender is not None:
            return

        def run() -> None:
            while True:
                self._wake.wait(period)
                self._wake.clear()
                try:
                    self.deliver()
                except Exception as error:  # the service is down or refusing: the outbox keeps everything
                    LOGGER.warning("audit events not delivered yet (%d pending): %s", self.pending(), error)

        self._sender = threading.Thread(target=run, name="audit-client", daemon=True)
        self._sender.start()


def _append_durably(path: Path, line: bytes) -> None:
    with path.open("ab") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.write(line + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
