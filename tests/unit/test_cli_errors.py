"""Every usage error of `ipc-router` is one line naming the option (or variable) and
the form or range it accepts, after the usage of the command it belongs to, and
exits 2 (issue 17)."""

from __future__ import annotations

import pytest

from actors.cli import build_parser, main
from actors.cli_values import ValueType

pytestmark = pytest.mark.timeout(10)

NATS_URL_FORM = (
    "a NATS URL, nats://host:port (or tls://, ws://, wss://), several comma-separated for a cluster"
)
SECONDS = "more than 0 and at most 86400 seconds"

CASES: list[tuple[list[str], str]] = [
    # serve: ranges
    (["serve", "--heartbeat-interval", "0"], f"--heartbeat-interval must be {SECONDS} (got 0)"),
    (["serve", "--lease-ttl", "86401"], f"--lease-ttl must be {SECONDS} (got 86401)"),
    (["serve", "--offline-after", "-1"], f"--offline-after must be {SECONDS} (got -1)"),
    (["serve", "--offline-retention", "soon"], f"--offline-retention must be {SECONDS} (got soon)"),
    (["serve", "--failover-after", "nan"], f"--failover-after must be {SECONDS} (got nan)"),
    (["serve", "--tombstone-ttl", "inf"], f"--tombstone-ttl must be {SECONDS} (got inf)"),
    (
        ["serve", "--dead-link-after", "0.1"],
        "--dead-link-after must be at least 0.3 and at most 600 seconds (got 0.1)",
    ),
    (["serve", "--admin-head-timeout", "0"], f"--admin-head-timeout must be {SECONDS} (got 0)"),
    (["serve", "--admin-idle-timeout", ""], f"--admin-idle-timeout must be {SECONDS} (got '')"),
    (["serve", "--http-port", "65536"], "--http-port must be a port number from 0 to 65535 (got 65536)"),
    (
        ["serve", "--embedded-nats-port", "x"],
        "--embedded-nats-port must be a port number from 0 to 65535 (got x)",
    ),
    (["serve", "--replicas", "0"], "--replicas must be a number of copies from 1 to 5 (got 0)"),
    (["serve", "--replicas", "6"], "--replicas must be a number of copies from 1 to 5 (got 6)"),
    (["serve", "--max-instances", "0"], "--max-instances must be a whole number of at least 1 (got 0)"),
    (
        ["serve", "--max-instances-per-service", "1.5"],
        "--max-instances-per-service must be a whole number of at least 1 (got 1.5)",
    ),
    (
        ["serve", "--max-metadata-bytes", "65537"],
        "--max-metadata-bytes must be a number of bytes from 1 to 65536 (got 65537)",
    ),
    (["serve", "--mailbox-size", "-3"], "--mailbox-size must be a whole number of at least 1 (got -3)"),
    (
        ["serve", "--admin-max-connections", "0"],
        "--admin-max-connections must be a whole number of at least 1 (got 0)",
    ),
    # serve: forms
    (["serve", "--nats-url", "foo"], f"--nats-url must be {NATS_URL_FORM} (got foo)"),
    (["serve", "--nats-url", "localhost:4222"], f"--nats-url must be {NATS_URL_FORM} (got localhost:4222)"),
    (["serve", "--nats-url", "nats://a:99999"], f"--nats-url must be {NATS_URL_FORM} (got nats://a:99999)"),
    (
        ["serve", "--nats-url", "nats://a:4222,ws://b:8080"],
        ("--nats-url must be all websocket (ws, wss) or all NATS (nats, tls) URLs "
        "(got 'nats://a:4222,ws://b:8080')"),
    ),
    (
        ["serve", "--http-host", "my host"],
        "--http-host must be an IP address or host name, such as 127.0.0.1 or 0.0.0.0 (got 'my host')",
    ),
    (
        ["serve", "--stream", "A.B"],
        "--stream must be a stream name: letters, digits, _ and -, at most 255 characters (got A.B)",
    ),
    (
        ["serve", "--nats-inbox-prefix", "_INBOX.*"],
        ("--nats-inbox-prefix must be subject tokens without wildcards, such as _INBOX_service "
        "(got '_INBOX.*')"),
    ),
    (
        ["serve", "--store-nats-inbox-prefix", "a b"],
        ("--store-nats-inbox-prefix must be subject tokens without wildcards, such as "
        "_INBOX_service (got 'a b')"),
    ),
    (
        ["serve", "--nats-reply-prefixes", "_INBOX_service,_INBOX.>"],
        ("--nats-reply-prefixes must be inbox prefixes, comma-separated, such as "
        "_INBOX_service,_INBOX_admin (got '_INBOX_service,_INBOX.>')"),
    ),
    (
        ["serve", "--admin-token", "two words"],
        ("--admin-token must be visible ASCII characters without spaces (it travels in an "
        "HTTP header)"),
    ),
    (["serve", "--store", "disk"], "--store must be one of stream, memory (got 'disk')"),
    (["serve", "--log-format", "xml"], "--log-format must be one of console, json (got 'xml')"),
    (
        ["serve", "--log-level", "loud"],
        "--log-level must be one of debug, info, warning, error (got 'loud')",
    ),
    # serve: the shape of the command line
    (["serve", "--http-port"], "--http-port needs a value: a port number from 0 to 65535"),
    (["serve", "--store"], "--store needs a value: one of stream, memory"),
    (["serve", "--uvloop=yes"], "--uvloop takes no value (got 'yes')"),
    (["serve", "--bogus"], "--bogus is not an option of ipc-router serve (see ipc-router serve --help)"),
    (
        ["serve", "--http-prot", "8081"],
        "--http-prot is not an option of ipc-router serve (did you mean --http-port?)",
    ),
    (["serve", "now"], "unexpected argument 'now' (see ipc-router serve --help)"),
    # serve: options that go together
    (
        ["serve", "--heartbeat-interval", "3"],
        ("--heartbeat-interval (3 s) must be shorter than --lease-ttl (3 s), or every instance "
        "would flap UNHEALTHY"),
    ),
    (
        ["serve", "--failover-after", "10"],
        ("--failover-after (10 s) must not be much longer than --lease-ttl (3 s): clients would "
        "find no leader for longer than their leases last"),
    ),
    (["serve", "--nats-password", "secret"], "--nats-password needs --nats-user"),
    (["serve", "--store-nats-password", "secret"], "--store-nats-password needs --store-nats-user"),
    (
        ["serve", "--nats-tls-cert", "c.pem"],
        "--nats-tls-cert needs --nats-tls-key (a client certificate and its key go together)",
    ),
    (
        ["serve", "--nats-tls-key", "k.pem"],
        "--nats-tls-key needs --nats-tls-cert (a client certificate and its key go together)",
    ),
    # services
    (
        ["services", "a.b"],
        "NAME must be a service name of 1-64 letters, digits, _ or - (got a.b)",
    ),
    (
        ["services", "--status", "gone"],
        "--status must be one of ONLINE, UNHEALTHY, OFFLINE (got 'GONE')",
    ),
    (
        ["services", "--admin-url", "localhost:8080"],
        ("--admin-url must be an http:// or https:// URL such as http://127.0.0.1:8080 "
        "(got localhost:8080)"),
    ),
    (["services", "--jsn"], "--jsn is not an option of ipc-router services (did you mean --json?)"),
    # bench
    (["bench", "-n", "0"], "--instances must be a whole number of at least 1 (got 0)"),
    (["bench", "--services", "x"], "--services must be a whole number of at least 1 (got x)"),
    (["bench", "-c", "0"], "--concurrency must be a whole number of at least 1 (got 0)"),
    (["bench", "--heartbeat-seconds", "0"], f"--heartbeat-seconds must be {SECONDS} (got 0)"),
    (["bench", "--nats-url", "foo"], f"--nats-url must be {NATS_URL_FORM} (got foo)"),
    (["bench", "--store", "disk"], "--store must be one of stream, memory (got 'disk')"),
]

TOP_LEVEL_CASES: list[tuple[list[str], str]] = [
    ([], "COMMAND is missing: one of serve, services, maintenance, deregister, bench"),
    (["start"], "COMMAND must be one of serve, services, maintenance, deregister, bench (got 'start')"),
    (["--debug", "serve"], "--debug is not an option of ipc-router (see ipc-router --help)"),
    (["--verison", "serve"], "--verison is not an option of ipc-router (did you mean --version?)"),
]

ENVIRONMENT_CASES: list[tuple[list[str], dict[str, str], str]] = [
    (
        ["serve"],
        {"IPC_ROUTER_HTTP_PORT": "http"},
        "IPC_ROUTER_HTTP_PORT (for --http-port) must be a port number from 0 to 65535 (got http)",
    ),
    (
        ["serve"],
        {"IPC_ROUTER_STORE": "disk"},
        "IPC_ROUTER_STORE (for --store) must be one of stream, memory (got 'disk')",
    ),
    (
        ["serve"],
        {"IPC_ROUTER_LEASE_TTL": "0"},
        f"IPC_ROUTER_LEASE_TTL (for --lease-ttl) must be {SECONDS} (got 0)",
    ),
    (
        ["services"],
        {"IPC_ROUTER_ADMIN_URL": "127.0.0.1:8080"},
        ("IPC_ROUTER_ADMIN_URL (for --admin-url) must be an http:// or https:// URL such as "
        "http://127.0.0.1:8080 (got 127.0.0.1:8080)"),
    ),
]

FREE_FORM = {
    "--data-dir", "--nats-user", "--nats-password", "--nats-token", "--nats-creds",
    "--nats-tls-ca", "--nats-tls-cert", "--nats-tls-key", "--store-nats-user",
    "--store-nats-password", "--store-nats-token", "--store-nats-creds", "--help",
}  # fmt: skip
"""Options whose value has no form to check: names, secrets, paths (a missing file is
reported when it is opened, naming it)."""


def usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> tuple[list[str], str]:
    """Run the CLI; return the lines before the last on stderr (the usage) and the last."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    *usage, last = captured.err.splitlines()
    return usage, last


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_each_error_is_one_line_after_its_commands_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IPC_ROUTER_ADMIN_TOKEN", raising=False)
    usage, last = usage_error(capsys, argv)
    assert last == f"ipc-router {argv[0]}: error: {message}"
    assert usage[0].startswith(f"usage: ipc-router {argv[0]} ")
    assert not any(": error:" in line for line in usage)


@pytest.mark.parametrize(
    ("argv", "message"), TOP_LEVEL_CASES, ids=[" ".join(a) or "nothing" for a, _ in TOP_LEVEL_CASES]
)
def test_an_error_before_the_command_follows_the_top_level_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    usage, last = usage_error(capsys, argv)
    assert last == f"ipc-router: error: {message}"
    assert usage == ["usage: ipc-router [-h] [--version] COMMAND ..."]


@pytest.mark.parametrize(
    ("argv", "environment", "message"),
    ENVIRONMENT_CASES,
    ids=[next(iter(env)) for _, env, _ in ENVIRONMENT_CASES],
)
def test_a_bad_environment_value_names_its_variable(
    argv: list[str],
    environment: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    _, last = usage_error(capsys, argv)
    assert last == f"ipc-router {argv[0]}: error: {message}"


def test_an_admin_token_is_never_repeated_in_its_error(capsys: pytest.CaptureFixture[str]) -> None:
    _, last = usage_error(capsys, ["serve", "--admin-token", "s3cret value"])
    assert "s3cret" not in last


def test_every_option_with_a_value_has_a_form_that_its_error_names() -> None:
    """An option added later gets a range or form too, or is named free-form here."""
    parser = build_parser()
    unchecked = []
    for command, sub in parser.commands.items():
        for action in sub._actions:
            flag = max(action.option_strings, key=len, default=action.dest)
            if action.nargs == 0 or flag in FREE_FORM:
                continue
            if action.choices is None and not isinstance(action.type, ValueType):
                unchecked.append(f"{command} {flag}")
    assert unchecked == []


def test_every_case_names_an_option_of_its_command() -> None:
    commands = build_parser().commands
    for argv, message in CASES:
        flag = message.split()[0]
        if flag.startswith("--") and "is not an option" not in message:
            assert flag in commands[argv[0]]._option_string_actions, (argv, flag)



@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--nats-url", "nats://127.0.0.1:4222"],
        ["serve", "--nats-url", "nats://router:secret@a:4222,tls://b,nats://[::1]:4223"],
        ["serve", "--nats-url", "ws://a:8080,wss://b/"],
        ["serve", "--http-host", "0.0.0.0"],
        ["serve", "--http-host", "::"],
        ["serve", "--http-host", "router-0.internal"],
        ["serve", "--heartbeat-interval", "0.1", "--lease-ttl", "86400", "--offline-after", "1e3"],
        ["serve", "--replicas", "5", "--max-metadata-bytes", "65536", "--http-port", "0"],
        ["serve", "--stream", "IPC_REGISTRY_2", "--nats-inbox-prefix", "_INBOX_router.a"],
        ["serve", "--nats-reply-prefixes", "_INBOX_service., _INBOX_admin"],
        ["serve", "--admin-token", "prod-admin-token_0123456789~!"],
        ["services", "orders", "--admin-url", "https://proxy.example/ipc-router/"],
        ["services", "--status", "online"],
        ["bench", "--nats-url", "nats://127.0.0.1:4222", "-n", "1", "-d", "0.5"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_values_of_the_accepted_forms_are_taken(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.command == argv[0]
