"""``make run``, ``make test`` and ``make bench``: the whole local stack from one command.

    python -m dealflow.devstack run     # everything up, on fixed local ports; Ctrl-C stops it
    python -m dealflow.devstack test    # lint, then the full test suite on real servers
    python -m dealflow.devstack bench   # the benchmarks under bench/

This is the CLI of the project: it prints (the rest of the code logs).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from dealflow.ids import search_attribute_cli_args
from dealflow.settings import PROJECT_ROOT, SANDBOX_FILE
from dealflow.stack import (
    migrate,
    port_is_open,
    start_embedded_postgres,
    wait_for_port,
    with_database,
)
from dealflow.tools import STRIPE_MOCK, TEMPORAL, ToolError, ensure_tool

STATE = PROJECT_ROOT / ".state"
PY = sys.executable


@dataclass
class Ports:
    api: int = 8000
    temporal: int = 7233
    temporal_ui: int = 8233
    sandbox_http: int = 8090
    sandbox_https: int = 8443
    smtp: int = 2525
    stripe_mock: int = 12111


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log_path: Path | None = None
    pump: threading.Thread | None = field(default=None, repr=False)


def say(msg: str) -> None:
    print(msg, flush=True)


def _pump(name: str, stream: IO[str], log: IO[str] | None, echo: bool) -> None:
    for line in stream:
        if log is not None:
            log.write(line)
            log.flush()
        if echo:
            sys.stdout.write(f"{name:>7} | {line}")
            sys.stdout.flush()


class Stack:
    """Child processes started in order and stopped in reverse, cleanly, on exit or Ctrl-C."""

    def __init__(self) -> None:
        self.services: list[Service] = []
        (STATE / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict[str, str], *, echo: bool) -> Service:
        log_path = STATE / "logs" / f"{name}.log"
        log = log_path.open("a")
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        assert proc.stdout is not None
        pump = threading.Thread(target=_pump, args=(name, proc.stdout, log, echo), daemon=True)
        pump.start()
        svc = Service(name, proc, log_path, pump)
        self.services.append(svc)
        return svc

    def check_alive(self) -> None:
        for svc in self.services:
            if svc.proc.poll() is not None:
                raise RuntimeError(
                    f"{svc.name} exited with code {svc.proc.returncode}; see {svc.log_path}"
                )

    def stop(self) -> None:
        for svc in reversed(self.services):
            if svc.proc.poll() is None:
                say(f"==> stopping {svc.name}")
                svc.proc.send_signal(signal.SIGTERM)
                try:
                    svc.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    svc.proc.kill()
                    svc.proc.wait()
        self.services.clear()


def _check_ports_free(ports: Ports) -> None:
    busy = [f"{name}={port}" for name, port in vars(ports).items() if port_is_open(port)]
    if busy:
        raise RuntimeError(
            "ports already in use: " + ", ".join(busy) + " (is another `make run` still up?)"
        )


def run(args: argparse.Namespace) -> int:
    ports = Ports()
    _check_ports_free(ports)
    temporal_bin = ensure_tool(TEMPORAL, out=sys.stdout)
    stripe_bin = ensure_tool(STRIPE_MOCK, out=sys.stdout)
    stack = Stack()
    pg = None

    def on_signal(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    # Restore Python's Ctrl-C handling even when started from a shell that ignores SIGINT for
    # background jobs, and treat SIGTERM the same way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        database_url = os.environ.get("DATABASE_URL")
        if database_url:
            say("==> PostgreSQL: using DATABASE_URL")
        else:
            say("==> PostgreSQL: starting embedded server (pgserver) in .state/pg")
            pg, server_url = start_embedded_postgres(STATE / "pg")
            database_url = with_database(server_url, "dealflow")
        say("==> applying migrations (alembic upgrade head)")
        migrate(database_url)

        env = dict(
            os.environ,
            # The dev stack is the sandbox, explicitly: the settings default to production.
            DEALFLOW_PROFILE="sandbox",
            DATABASE_URL=database_url,
            TEMPORAL_ADDRESS=f"127.0.0.1:{ports.temporal}",
            DEALFLOW_PUBLIC_BASE_URL=f"http://127.0.0.1:{ports.api}",
            DEALFLOW_SANDBOX_URL=f"http://127.0.0.1:{ports.sandbox_http}",
            DEALFLOW_SMTP_PORT=str(ports.smtp),
            DEALFLOW_STRIPE_API_BASE=f"http://127.0.0.1:{ports.stripe_mock}",
            DEALFLOW_CRM_API_URL=f"http://127.0.0.1:{ports.sandbox_http}",
            DEALFLOW_DOCUSIGN_OAUTH_HOST=f"127.0.0.1:{ports.sandbox_https}",
            DEALFLOW_DOCUSIGN_CA_CERT=str(STATE / "sandbox" / "sandbox-tls-cert.pem"),
            PYTHONUNBUFFERED="1",
        )
        say(
            f"==> Temporal dev server (SQLite in .state/temporal.db, Web UI on {ports.temporal_ui})"
        )
        stack.start(
            "temporal",
            [
                str(temporal_bin),
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(ports.temporal),
                "--ui-port",
                str(ports.temporal_ui),
                "--db-filename",
                str(STATE / "temporal.db"),
                "--log-level",
                "warn",
                *search_attribute_cli_args(),
            ],
            env,
            echo=False,
        )
        say("==> stripe-mock")
        stack.start(
            "stripe",
            # Without -https-addr stripe-mock also takes 12112 on every interface.
            [
                str(stripe_bin),
                "-http-addr",
                f"127.0.0.1:{ports.stripe_mock}",
                "-https-addr",
                "127.0.0.1:0",
            ],
            env,
            echo=False,
        )
        say("==> sandbox servers (mail/SMTP, Slack, DocuSign, CRM stand-ins)")
        stack.start(
            "sandbox",
            [
                PY,
                "-m",
                "sandbox",
                "--http-port",
                str(ports.sandbox_http),
                "--smtp-port",
                str(ports.smtp),
                "--state-dir",
                str(STATE / "sandbox"),
                "--https-port",
                str(ports.sandbox_https),
                "--interactions-url",
                f"http://127.0.0.1:{ports.api}/v1/webhooks/slack/interactions",
                "--connect-url",
                f"http://127.0.0.1:{ports.api}/v1/webhooks/docusign",
            ],
            env,
            echo=True,
        )
        for name, port in (
            ("temporal", ports.temporal),
            ("stripe-mock", ports.stripe_mock),
            ("sandbox", ports.sandbox_http),
        ):
            wait_for_port(port, timeout=60, what=name)
            stack.check_alive()
        say("==> worker")
        stack.start("worker", [PY, "worker.py"], env, echo=True)
        say(f"==> API on {ports.api}")
        stack.start(
            "api",
            [
                PY,
                "-m",
                "uvicorn",
                "api.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports.api),
                "--log-level",
                "warning",
            ],
            env,
            echo=True,
        )
        wait_for_port(ports.api, timeout=60, what="api")
        stack.check_alive()
        _print_banner(ports)
        while True:
            stack.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        say("\n==> Ctrl-C: stopping everything")
        return 0
    except (RuntimeError, TimeoutError, ToolError) as err:
        say(f"error: {err}")
        return 1
    finally:
        stack.stop()
        if pg is not None:
            say("==> stopping PostgreSQL")
            pg.cleanup()


def _print_banner(ports: Ports) -> None:
    with SANDBOX_FILE.open("rb") as fh:
        keys = tomllib.load(fh)["api_keys"]
    say("")
    say("dealflow is up (sandbox profile)")
    say(f"  API docs      http://127.0.0.1:{ports.api}/docs")
    say(f"  Temporal UI   http://127.0.0.1:{ports.temporal_ui}")
    say(f"  Sandbox       http://127.0.0.1:{ports.api}/_sandbox/config")
    say(f"  Logs          {STATE / 'logs'}")
    say("  API keys (config/sandbox.toml):")
    for entry in keys:
        say(f"    {entry['email']:<36} {entry['key']}")
    say("Ctrl-C stops everything.")
    say("")


# The whole suite runs in this many pytest processes (pytest-xdist), each with its own stack
# (PostgreSQL, Temporal dev server, sandbox, stripe-mock, worker, API on free ports): much of a
# test's time is waiting on workflows, so two processes on two cores finish in well under the
# time of one. A file's tests stay in one process (--dist loadfile: module fixtures, ordering).
# `./scripts/dev test <pytest args>` (a file, -k, -n) runs exactly those, in one process.
TEST_PROCESSES = os.environ.get("DEALFLOW_TEST_PROCESSES", "2")


def _parallel(pytest_args: list[str]) -> list[str]:
    if pytest_args or TEST_PROCESSES in ("", "0", "1"):
        return pytest_args
    return ["-n", TEST_PROCESSES, "--dist", "loadfile"]


# The packages `make test` type-checks, strictly: pure rules, the messages workflows exchange, and
# the deterministic workflow code (pyproject.toml, [tool.mypy]).
TYPED = "domain messages workflows"


def test(args: argparse.Namespace) -> int:
    try:
        temporal_bin = ensure_tool(TEMPORAL)
        stripe_bin = ensure_tool(STRIPE_MOCK)
    except ToolError as err:
        say(f"error: {err}")
        return 1
    env = dict(
        os.environ,
        DEALFLOW_PROFILE="sandbox",  # explicit: the settings default to production
        DEALFLOW_TEMPORAL_BIN=str(temporal_bin),
        DEALFLOW_STRIPE_MOCK_BIN=str(stripe_bin),
    )
    say("==> lint: ruff check, ruff format --check; types: mypy (strict on " + TYPED + ")")
    for cmd in (
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        # The settings are [tool.mypy] in pyproject.toml; only these packages are checked.
        ["mypy", *TYPED.split()],
    ):
        code = subprocess.call([PY, "-m", *cmd], cwd=PROJECT_ROOT)
        if code:
            return code
    say("==> tests (real Temporal dev server, real PostgreSQL, sandbox servers)")
    return subprocess.call(
        [PY, "-m", "pytest", "-p", "no:cacheprovider", *_parallel(args.pytest_args)],
        cwd=PROJECT_ROOT,
        env=env,
    )


def bench(args: argparse.Namespace) -> int:
    try:
        temporal_bin = ensure_tool(TEMPORAL)
        stripe_bin = ensure_tool(STRIPE_MOCK)
    except ToolError as err:
        say(f"error: {err}")
        return 1
    env = dict(
        os.environ,
        DEALFLOW_PROFILE="sandbox",  # explicit: the settings default to production
        DEALFLOW_TEMPORAL_BIN=str(temporal_bin),
        DEALFLOW_STRIPE_MOCK_BIN=str(stripe_bin),
    )
    return subprocess.call([PY, "-m", "bench", *args.bench_args], cwd=PROJECT_ROOT, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/dev", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="bring the whole stack up locally")
    p_test = sub.add_parser("test", help="lint and run the test suite")
    p_test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p_bench = sub.add_parser("bench", help="run the benchmarks")
    p_bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"] and argv[1:2] != ["-h"]:
        # Everything after `bench` is the bench's own (`python -m bench --help`): REMAINDER
        # refuses a first argument that starts with "--", so `bench --scenario x` failed.
        return bench(argparse.Namespace(bench_args=argv[1:]))
    args = parser.parse_args(argv)
    return {"run": run, "test": test, "bench": bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
