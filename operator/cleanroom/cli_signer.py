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

from cleanroom._clients.tls import server_context
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
    parser.add_argument("--tls-cert", default="", help="certificate chain (PEM): serve HTTPS only")
    parser.add_argument("--tls-key", default="", help="the certificate's private key (PEM)")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
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
    tls = server_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    server = signer_server(args.host, args.port, signer, tls)
    logging.getLogger("cleanroom.signer").info(
        "grant signer on %s://%s:%s", "https" if tls else "http", args.host, server.server_address[1]
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
