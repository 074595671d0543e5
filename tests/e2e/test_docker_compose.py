"""Static checks of docker-compose.yaml and the Dockerfile (no Docker engine needed).

What can be checked without running containers is checked against the real thing:
the router's command against our own argument parser, the nats service's flags
against the bundled nats-server binary, and the healthcheck paths against the
routes the servers actually serve.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import shlex
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from aiohttp import web

from actors.actor import ActorRef
from actors.cli import build_parser
from actors.embedded_nats import nats_server_binary
from actors.http_gateway import HealthProbe, build_admin_app
from actors.registry import RegistryClient
from protocol import LeasePolicy
from tests.support.network import free_port

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

NATS_CLIENT_PORT = 4222  # nats-server's default client port
READY_TIMEOUT = 20.0

# nats-server flags that take a value (short and long spellings).
PORT_FLAGS = ("-p", "--port")
HTTP_PORT_FLAGS = ("-m", "--http_port")
STORE_DIR_FLAGS = ("-sd", "--store_dir")
CONFIG_FLAGS = ("-c", "--config")


def _mounted_file(service: dict[str, Any], container_path: str) -> Path:
    """The repository file that compose mounts at `container_path`."""
    volumes: list[str] = service.get("volumes", [])
    for volume in volumes:
        source, _, rest = volume.partition(":")
        target = rest.split(":", 1)[0]
        if target == container_path and source.startswith("."):
            path = (COMPOSE_FILE.parent / source).resolve()
            assert path.is_file(), f"compose mounts {source}, which does not exist"
            return path
    raise AssertionError(f"{container_path} is not mounted from the repository")
HOST_FLAGS = ("-a", "--addr", "--net")


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yaml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    services = compose.get("services")
    assert isinstance(services, dict), "docker-compose.yaml has no `services` mapping"
    return services


def _command(service: dict[str, Any], name: str) -> list[str]:
    command = service.get("command")
    assert isinstance(command, list), (
        f"service {name!r}: `command` must be a YAML list (exec form), got {command!r}"
    )
    assert all(isinstance(part, str) for part in command), (
        f"service {name!r}: every command item must be a string (quote numbers): {command!r}"
    )
    return command


def _flag_value(command: list[str], flags: tuple[str, ...]) -> str | None:
    """The value of the first of `flags` in `command` (`-f v`, `--flag v` or `--flag=v`)."""
    for index, part in enumerate(command):
        if part in flags:
            assert index + 1 < len(command), f"flag {part} has no value in {command!r}"
            return command[index + 1]
        name, sep, value = part.partition("=")
        if sep and name in flags:
            return value
    return None


def _replace_flag(command: list[str], flags: tuple[str, ...], value: str) -> list[str]:
    """`command` with every one of `flags` set to `value`; appended if absent."""
    result: list[str] = []
    found = False
    skip = False
    for part in command:
        if skip:
            skip = False
            continue
        name, sep, _ = part.partition("=")
        if part in flags:
            result += [part, value]
            found = skip = True
        elif sep and name in flags:
            result.append(f"{name}={value}")
            found = True
        else:
            result.append(part)
    if not found:
        result += [flags[0], value]
    return result


def _container_ports(service: dict[str, Any]) -> set[int]:
    """Container-side ports named in `expose` and `ports` (short syntax)."""
    ports: set[int] = set()
    for item in service.get("expose", []) or []:
        ports.add(int(str(item).split("/")[0]))
    for item in service.get("ports", []) or []:
        if isinstance(item, dict):
            ports.add(int(item["target"]))
        else:
            ports.add(int(str(item).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def _published_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port for `ports` entries in short syntax."""
    published: dict[int, int] = {}
    for item in service.get("ports", []) or []:
        parts = str(item).split("/")[0].split(":")
        if len(parts) >= 2:
            published[int(parts[-1])] = int(parts[-2])
    return published


def _healthcheck_test(service: dict[str, Any], name: str) -> list[str]:
    healthcheck = service.get("healthcheck")
    assert isinstance(healthcheck, dict), f"service {name!r} has no healthcheck"
    test = healthcheck.get("test")
    assert isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"), (
        f"service {name!r}: healthcheck.test must be a list starting with CMD: {test!r}"
    )
    return test


def _url_in(parts: list[str]) -> str:
    """The one http:// URL that occurs in `parts` (maybe inside a python -c snippet)."""
    urls = [
        word.strip("'\"();,")
        for part in parts
        for word in part.replace("(", " ").replace(",", " ").split()
        if "http://" in word
    ]
    assert len(urls) == 1, f"expected exactly one http:// URL in {parts!r}, found {urls!r}"
    return urls[0]


def _serve_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            serve: argparse.ArgumentParser = action.choices["serve"]
            return serve
    raise AssertionError("build_parser() has no `serve` sub-command")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# ------------------------------------------------------------------- compose layout


def test_compose_has_both_services_and_router_waits_for_healthy_nats(
    services: dict[str, Any],
) -> None:
    assert {"nats", "router"} <= services.keys(), f"services: {sorted(services)}"
    router, nats = services["router"], services["nats"]

    depends_on = router.get("depends_on")
    assert isinstance(depends_on, dict) and "nats" in depends_on, (
        f"router must depend on nats (long form, with a condition): {depends_on!r}"
    )
    assert depends_on["nats"].get("condition") == "service_healthy"

    assert str(nats.get("image", "")).startswith("nats:2.10"), nats.get("image")
    assert "build" in router, "router must be built from the Dockerfile"
    build = router["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (COMPOSE_FILE.parent / context / dockerfile).resolve() == DOCKERFILE
    assert router.get("restart") == "unless-stopped"
    assert "8080:8080" in [str(p) for p in router.get("ports", [])]


def test_nats_jetstream_store_is_on_a_named_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    command = _command(services["nats"], "nats")
    assert "-js" in command or "--jetstream" in command, f"JetStream not enabled: {command!r}"
    store_dir = _flag_value(command, STORE_DIR_FLAGS)
    assert store_dir, f"no -sd/--store_dir in {command!r}"

    named_volumes = (compose.get("volumes") or {}).keys()
    mounts = []
    for volume in services["nats"].get("volumes", []):
        source, _, target = str(volume).partition(":")
        mounts.append((source, target.split(":")[0]))
    covering = [
        source
        for source, target in mounts
        if store_dir == target or store_dir.startswith(target.rstrip("/") + "/")
    ]
    assert covering, f"store dir {store_dir} is not on a mounted volume: {mounts!r}"
    assert all(source in named_volumes for source in covering), (
        f"the store dir's volume must be a named volume declared under `volumes:`: {covering!r}"
    )


def test_router_nats_url_points_at_the_nats_service(services: dict[str, Any]) -> None:
    command = _command(services["router"], "router")
    url = _flag_value(command, ("--nats-url",))
    assert url, f"router command has no --nats-url: {command!r}"
    parts = urlsplit(url)
    assert parts.scheme == "nats", url
    assert parts.hostname == "nats", f"host of {url} must be the nats service name"

    nats_command = _command(services["nats"], "nats")
    nats_port = int(_flag_value(nats_command, PORT_FLAGS) or NATS_CLIENT_PORT)
    assert (parts.port or NATS_CLIENT_PORT) == nats_port, (
        f"{url} does not use the nats service's client port {nats_port}"
    )
    assert nats_port in _container_ports(services["nats"]), (
        f"nats service does not expose its client port {nats_port}"
    )


# ------------------------------------------------------------ router command vs parser


def test_router_command_is_accepted_by_our_parser(services: dict[str, Any]) -> None:
    command = _command(services["router"], "router")
    entrypoint = _exec_form(dict(_dockerfile_instructions())["ENTRYPOINT"])
    assert entrypoint == ["ipc-router"]
    assert command[0] == "serve", f"router command must start with the sub-command: {command!r}"

    parser = build_parser()
    known = set(_serve_parser(parser)._option_string_actions)
    used = {part.split("=", 1)[0] for part in command if part.startswith("--")}
    unknown = used - known
    assert not unknown, f"options unknown to `ipc-router serve`: {sorted(unknown)}"

    try:
        args = parser.parse_args(command)
    except SystemExit as exit_:  # argparse exits 2 on a bad command line
        pytest.fail(f"`ipc-router {shlex.join(command)}` is rejected by build_parser(): {exit_}")

    assert args.command == "serve"
    assert args.nats_url == "nats://nats:4222"
    assert args.http_host == "0.0.0.0"
    assert args.http_port == 8080
    assert args.log_format == "json"


def test_router_ports_match_its_http_port_and_image(services: dict[str, Any]) -> None:
    router = services["router"]
    args = build_parser().parse_args(_command(router, "router"))
    assert args.http_port in _published_ports(router), (
        f"--http-port {args.http_port} is not published: {router.get('ports')!r}"
    )
    exposed = [
        int(port.split("/")[0])
        for keyword, rest in _dockerfile_instructions()
        if keyword == "EXPOSE"
        for port in rest.split()
    ]
    assert args.http_port in exposed, f"Dockerfile EXPOSE {exposed} lacks {args.http_port}"


# ---------------------------------------------------------------------- Dockerfile


def test_dockerfile_installs_the_project_and_runs_ipc_router_as_non_root() -> None:
    instructions = _dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]

    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("python:3.11-slim")
    assert any(k == "RUN" and "pip install ." in rest for k, rest in instructions)
    assert _exec_form(dict(instructions)["ENTRYPOINT"]) == ["ipc-router"]

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("ipc-router") == "actors.cli:main", "no ipc-router console script"

    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users, "the image must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"final USER is root: {users[-1]}"
    assert keywords.index("USER") > max(
        i for i, (k, rest) in enumerate(instructions) if k == "RUN"
    ), "USER must come after the last RUN"

    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".venv", ".git"} <= ignored
    assert any("__pycache__" in line for line in ignored)


# ------------------------------------------------------------------------ healthchecks


async def test_router_healthcheck_hits_a_route_of_the_admin_app(
    services: dict[str, Any],
) -> None:
    router = services["router"]
    test = _healthcheck_test(router, "router")
    assert test[0] == "CMD" and test[1] == "python" and test[2] == "-c", (
        f"router healthcheck must be `python -c ...` (no curl in the slim image): {test!r}"
    )
    url = urlsplit(_url_in(test))
    args = build_parser().parse_args(_command(router, "router"))
    assert url.hostname == "127.0.0.1" and url.port == args.http_port, url.geturl()
    assert url.path == "/healthz"

    healthy = {"value": True}
    async def connected() -> bool:
        return healthy["value"]

    probe = HealthProbe(
        nats_connected=connected,
        registry_running=lambda: True,
        lease_policy=LeasePolicy(),
    )
    app = build_admin_app(RegistryClient(ActorRef("registry")), probe)
    paths = {route.resource.canonical for route in app.router.routes() if route.resource}
    assert url.path in paths, f"{url.path} is not served by the admin app: {sorted(paths)}"

    # Run the healthcheck's own python snippet against the admin app on a free port:
    # exit 0 when healthy, non-zero on 503.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        snippet = test[3].replace(f"127.0.0.1:{args.http_port}", f"127.0.0.1:{port}")
        assert snippet != test[3]

        async def run_snippet() -> int:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", snippet,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            return await asyncio.wait_for(process.wait(), 15)

        assert await run_snippet() == 0, "healthcheck fails on a healthy router"
        healthy["value"] = False
        assert await run_snippet() != 0, "healthcheck passes on an unhealthy router"
    finally:
        await runner.cleanup()


async def test_nats_command_runs_on_the_bundled_nats_server(
    services: dict[str, Any], tmp_path: Path
) -> None:
    nats = services["nats"]
    command = _command(nats, "nats")
    monitor_port = _flag_value(command, HTTP_PORT_FLAGS)
    assert monitor_port, f"nats command lacks -m/--http_port: {command!r}"

    health_url = urlsplit(_url_in(_healthcheck_test(nats, "nats")))
    assert health_url.path == "/healthz"
    assert health_url.port == int(monitor_port), (
        f"nats healthcheck uses port {health_url.port}, monitoring is on {monitor_port}"
    )

    client_port, http_port = free_port(), free_port()
    args = _replace_flag(command, PORT_FLAGS, str(client_port))
    args = _replace_flag(args, HTTP_PORT_FLAGS, str(http_port))
    if _flag_value(args, STORE_DIR_FLAGS) is not None:
        args = _replace_flag(args, STORE_DIR_FLAGS, str(tmp_path / "jetstream"))
    args = _replace_flag(args, HOST_FLAGS, "127.0.0.1")
    config = _flag_value(args, CONFIG_FLAGS)
    if config is not None:  # the container path of a file compose mounts from the repo
        args = _replace_flag(args, CONFIG_FLAGS, str(_mounted_file(nats, config)))
    env = {**os.environ, **{name: "test-password" for name in nats.get("environment", {})}}

    process = await asyncio.create_subprocess_exec(
        nats_server_binary(), *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    seen: list[str] = []
    drain: asyncio.Task[None] | None = None
    try:
        assert process.stderr is not None
        stderr = process.stderr

        async def wait_ready() -> bool:
            while line := await stderr.readline():
                seen.append(line.decode(errors="replace").rstrip())
                if "Server is ready" in seen[-1]:
                    return True
            await process.wait()  # exited before it was ready: reap it for the message
            return False

        try:
            ready = await asyncio.wait_for(wait_ready(), READY_TIMEOUT)
        except TimeoutError:
            ready = False
        assert ready, (
            f"nats-server {shlex.join(args)} did not become ready "
            f"(exit code {process.returncode}):\n" + "\n".join(seen[-20:])
        )

        async def keep_draining() -> None:  # so the server never blocks on a full pipe
            while await stderr.readline():
                pass

        drain = asyncio.create_task(keep_draining())

        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"http://127.0.0.1:{http_port}{health_url.path}") as reply,
        ):
            body = await reply.text()
            assert reply.status == 200, f"/healthz answered {reply.status}: {body}"
        assert any("JetStream" in line for line in seen), "JetStream did not start"
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            await asyncio.gather(drain, return_exceptions=True)
