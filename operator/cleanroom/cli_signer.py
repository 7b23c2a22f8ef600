"""``python -m cleanroom.cli_signer``: the grant signer materializers ask for object URLs (snapshots.signer).

It runs in a pod of its own, not in the operator: the only component that workspace namespaces' materializers
may reach holds the store's read-only key and no Kubernetes credentials. Its store settings are the usual
CLEANROOM_SNAPSHOT_* variables, with the read-only key as the access key; grants are sealed with a key
derived from that key's secret, as the operator derives it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cleanroom.config import snapshot_location
from cleanroom.snapshots import SnapshotError, SnapshotStore
from cleanroom.snapshots.signer import ObjectSigner, signer_server
from cleanroom.snapshots.signing import seal_key
from cleanroom.snapshots.store import presigner


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cleanroom.cli_signer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=8443, help="port of POST /v1/sign and GET /healthz")
    parser.add_argument(
        "--materializer-endpoint",
        default="",
        help="the store's address as materializers reach it, which URLs are signed for (default: the signer's)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        location = snapshot_location()
    except SnapshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    signer = ObjectSigner(
        SnapshotStore(location),
        presigner(location, args.materializer_endpoint),
        seal_key(location.secret_key),
    )
    server = signer_server(args.host, args.port, signer)
    logging.getLogger("cleanroom.signer").info("grant signer on %s:%s", args.host, server.server_address[1])
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
