"""A new pod's first request to a server, asked again while the network refuses it.

A network plugin programs a new pod's NetworkPolicies after the pod starts (kube-router on the pod's event,
seconds later on a loaded node) and rejects its traffic until then, so the first connection of a Job's pod to
the store, or to the grant signer (whose own ingress policy learns the pod's address the same way), can be
refused although the policies allow it. Each retry of such a Job is a new pod with the same
window. Only the network's refusals are retried: an answer from the server (any HTTP status) is final.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

PATIENCE_SECONDS = 90.0  # twice the longest delay seen on the loaded two-core test node
PAUSE_SECONDS = 1.0


def unreachable(error: OSError) -> bool:
    """A connection the network refused, reset or let time out (not an answer of the server's)."""
    if isinstance(error, urllib.error.HTTPError):
        return False
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    return isinstance(reason, ConnectionRefusedError | ConnectionResetError | TimeoutError)


def read_first(
    opener: urllib.request.OpenerDirector,
    url: str | urllib.request.Request,
    *,
    patience: float = PATIENCE_SECONDS,
    pause: float = PAUSE_SECONDS,
    timeout: float = 60,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> bytes:
    """The body at ``url``, asked again every ``pause`` seconds for ``patience`` seconds while the network
    refuses the connection; the last refusal is raised when the patience is spent."""
    deadline = monotonic() + patience
    while True:
        try:
            with opener.open(url, timeout=timeout) as response:
                return bytes(response.read())
        except OSError as error:
            if not unreachable(error) or monotonic() + pause > deadline:
                raise
        sleep(pause)
