"""A tiny service that registers itself with ipc-router and stays registered.

    python examples/service/service.py --nats-url nats://127.0.0.1:4222 \\
        --service example --instance example-1 --metadata zone=a

It registers one instance through the SDK (`sdk.ServiceClient`), which heartbeats it
in the background at the interval the router asks for (and registers it again should
a router forget it), prints one JSON line when registered, and runs until SIGTERM or
SIGINT: then it leaves the client, which deregisters the instance (OFFLINE at once
rather than UNHEALTHY after the lease runs out).

NATS credentials come from the environment, never from the command line:
  NATS_USER, NATS_PASSWORD  the `service` user of deploy/nats-server.conf
  NATS_INBOX_PREFIX         its inbox prefix (_INBOX_service in that file)
  NATS_TLS_CA               the CA that signed the servers' certificate, when they
                            require TLS (deploy/nats-cluster-tls.conf)
The options also read NATS_URL, SERVICE_NAME and INSTANCE_ID (the instance id
defaults to the host name: a container's id in Docker).

docker-compose.yaml runs it in its own image (examples/service/Dockerfile), which
installs the SDK alone: nats-py and msgspec.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from sdk import NatsAuth, RegistryError, ServiceClient

_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def _metadata_pair(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"metadata must be KEY=VALUE: {text!r}")
    return key, value


def default_instance_id() -> str:
    """INSTANCE_ID, else the host name made a valid instance id (letters, digits, _ -)."""
    chosen = os.environ.get("INSTANCE_ID") or _NOT_IN_A_NAME.sub("-", socket.gethostname())
    return chosen.strip("-")[:128] or "instance"


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/e2e/test_docker_compose.py parses the compose command
    with it)."""
    parser = argparse.ArgumentParser(
        prog="service.py",
        description="Register one instance with ipc-router and keep it alive until stopped.",
    )
    parser.add_argument(
        "--nats-url",
        default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        help="NATS servers, comma-separated [NATS_URL] (default: %(default)s)",
    )
    parser.add_argument(
        "--service",
        default=os.environ.get("SERVICE_NAME", "example"),
        help="service name [SERVICE_NAME] (default: %(default)s)",
    )
    parser.add_argument(
        "--instance",
        default=default_instance_id(),
        help="instance id [INSTANCE_ID] (default: the host name, %(default)s)",
    )
    parser.add_argument(
        "--metadata",
        action="append",
        type=_metadata_pair,
        default=[],
        metavar="KEY=VALUE",
        help="metadata of the instance (repeatable)",
    )
    return parser


def auth_from(environ: Mapping[str, str]) -> NatsAuth:
    """NATS credentials from NATS_USER, NATS_PASSWORD, NATS_INBOX_PREFIX, NATS_TLS_CA."""
    return NatsAuth(
        user=environ.get("NATS_USER") or None,
        password=environ.get("NATS_PASSWORD") or None,
        inbox_prefix=environ.get("NATS_INBOX_PREFIX") or None,
        tls_ca=environ.get("NATS_TLS_CA") or None,
    )


def _say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def run(args: argparse.Namespace, auth: NatsAuth) -> int:
    """Register, then wait for SIGTERM/SIGINT; leaving the client deregisters."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ServiceClient(args.nats_url, auth=auth) as client:
        registration = await client.register(args.service, args.instance, dict(args.metadata))
        _say(
            "registered",
            service=registration.service_name,
            instance=registration.instance_id,
            created=registration.created,
            heartbeat_interval=registration.heartbeat_interval,
        )
        await stop.wait()
    _say("deregistered", service=args.service, instance=args.instance)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args, auth_from(os.environ)))
    except (RegistryError, ValueError) as error:
        print(json.dumps({"event": "failed", "error": str(error)}), file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
