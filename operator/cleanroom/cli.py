"""The ``cleanroom`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cleanroom import __version__, cli_grammar


def _run_operator(args: argparse.Namespace) -> int:
    import faulthandler
    import signal

    import kopf

    # `kill -USR1 <pid>` prints every thread's stack: the way to see what a stuck handler waits on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    import cleanroom.handlers  # noqa: F401  (registers the handlers)
    from cleanroom.audit.writer import NoAuditSink, sink

    try:
        sink()  # chosen before the first handler: an operator in a cluster with no audit trail does not start
    except NoAuditSink as refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    if args.metrics_port:
        from prometheus_client import start_http_server

        # GET /metrics (Prometheus text format) on a port of its own: kopf's health server takes no routes.
        start_http_server(args.metrics_port, addr=args.health_host)

    log_format = {
        "plain": kopf.LogFormat.PLAIN,
        "full": kopf.LogFormat.FULL,
        "json": kopf.LogFormat.JSON,
    }[args.log_format]
    kopf.configure(verbose=args.verbose, log_format=log_format)
    # kopf installs SIGINT/SIGTERM handlers and finishes in-flight handlers before exiting.
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=f"http://{args.health_host}:{args.health_port}/healthz",
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cleanroom",
        description="Secure analysis workspaces over de-identified medical imaging data.",
    )
    parser.add_argument("--version", action="version", version=f"cleanroom {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    operator = commands.add_parser("operator", help="run the Kubernetes operator")
    operator.add_argument(
        "--namespace",
        action="append",
        metavar="NS",
        help="watch Workspaces only in this namespace (repeatable); default: every namespace",
    )
    operator.add_argument("--health-host", default="0.0.0.0", help="address of the health endpoint")
    operator.add_argument("--health-port", type=int, default=8080, help="port of GET /healthz")
    operator.add_argument(
        "--metrics-port", type=int, default=0, help="port of GET /metrics (Prometheus); default 0: none"
    )
    operator.add_argument(
        "--log-format", choices=["plain", "full", "json"], default="full", help="log line format"
    )
    operator.add_argument("--verbose", action="store_true", help="log at debug level")
    operator.set_defaults(func=_run_operator)

    cli_grammar.add_deid_commands(commands)
    cli_grammar.add_audit_commands(commands)
    cli_grammar.add_hub_commands(commands)
    cli_grammar.add_notebook_commands(commands)
    cli_grammar.add_export_commands(commands)
    shard = commands.add_parser(
        "ingest-shard",
        help="de-identify one shard of a Dataset's ingest run (a pod of its Indexed Job)",
        description="Reads the run's grant URL from CLEANROOM_INGEST_GRANT_URL, the key from "
        "CLEANROOM_INGEST_DEID_KEY and the shard from JOB_COMPLETION_INDEX; needs no storage credentials.",
    )
    shard.add_argument("--workers", type=int, default=1, help="de-identification processes (the pod's cores)")
    shard.set_defaults(
        func=lambda args: __import__("cleanroom.ingest.shard_worker", fromlist=["main"]).main(args.workers)
    )
    probe = commands.add_parser("egress-probe", help="try every route out of this pod and report (JSON)")
    probe.set_defaults(func=lambda _args: __import__("cleanroom.egress_probe", fromlist=["main"]).main())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
