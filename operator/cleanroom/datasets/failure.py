"""Why a Dataset's ingest cannot go on, and when it is tried again."""

from __future__ import annotations

MAX_BACKOFF_SECONDS = 600


class IngestFailure(Exception):
    """An ingest that cannot go on: ``reason`` (the Ready condition's) for machines, the message for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def backoff(retry: int) -> float:
    """Seconds before the next attempt after ``retry`` failed ones: 15 s, doubling, at most 10 minutes."""
    return float(min(15 * 2**retry, MAX_BACKOFF_SECONDS))
