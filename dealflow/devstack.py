"""``make run``, ``make test`` and ``make bench``: the whole local stack from one command.

    python -m dealflow.devstack run     # everything up, on fixed local ports; Ctrl-C stops it
    python -m dealflow.devstack test    # lint, then the full test suite on real servers
    python -m dealflow.devstack bench   # the benchmarks under bench/

This is the CLI of the project: it prints (the rest of the code logs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass

from dealflow.settings import PROJECT_ROOT, SANDBOX_FILE
from dealflow.stack import (
    bind_api_socket,
    migrate,
    port_is_open,
    service_env,
    start_api,
    start_embedded_postgres,
    start_sandbox,
    start_stripe_mock,
    start_worker,
    temporal_dev_server,
    wait_worker_ready,
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


def say(msg: str) -> None:
    print(msg, flush=True)


def _check_ports_free(ports: Ports) -> None:
    busy = [f"{name}={port}" for name, port in vars(ports).items() if port_is_open(port)]
    if busy:
        raise RuntimeError(
            "ports already in use: " + ", ".join(busy) + " (is another `make run` still up?)"
        )


async def _run_stack(ports: Ports) -> None:
    """The stack on fixed local ports, by the one launcher (dealflow/stack.py), until cancelled.

    Unlike the tests and the benchmarks, its data lives on in .state (PostgreSQL in .state/pg,
    Temporal's SQLite file, the sandbox's captures) from one `make run` to the next.
    """
    # SIGTERM stops the stack as Ctrl-C does: the main task is cancelled, the exit stack unwinds.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    log_dir = STATE / "logs"
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        database_url = os.environ.get("DATABASE_URL")
        if database_url:
            say("==> PostgreSQL: using DATABASE_URL")
        else:
            say("==> PostgreSQL: starting embedded server (pgserver) in .state/pg")
            pg, server_url = await asyncio.to_thread(start_embedded_postgres, STATE / "pg")
            stack.push_async_callback(asyncio.to_thread, pg.cleanup)
            database_url = await asyncio.to_thread(with_database, server_url, "dealflow")
        say("==> applying migrations (alembic upgrade head)")
        await asyncio.to_thread(migrate, database_url)

        say(
            f"==> Temporal dev server (SQLite in .state/temporal.db, Web UI on {ports.temporal_ui})"
        )
        temporal = await stack.enter_async_context(
            temporal_dev_server(
                log_dir / "temporal.log",
                port=ports.temporal,
                ui_port=ports.temporal_ui,
                db_file=STATE / "temporal.db",
            )
        )
        say("==> stripe-mock")
        stripe, stripe_url = await start_stripe_mock(log_dir, ports.stripe_mock)
        stack.push_async_callback(stripe.stop)
        say("==> sandbox servers (mail/SMTP, Slack, DocuSign, CRM stand-ins)")
        api_url = f"http://127.0.0.1:{ports.api}"
        sandbox, sandbox_ready = await start_sandbox(
            STATE,
            log_dir,
            api_url,
            http_port=ports.sandbox_http,
            smtp_port=ports.smtp,
            https_port=ports.sandbox_https,
            echo=True,
        )
        stack.push_async_callback(sandbox.stop)
        env = service_env(
            database_url=database_url,
            temporal_address=f"127.0.0.1:{ports.temporal}",
            state_dir=STATE,
            public_base_url=api_url,
            sandbox=await sandbox_ready(),
            stripe_url=stripe_url,
        )
        say("==> worker")
        worker = await start_worker(env, log_dir, echo=True)
        stack.push_async_callback(worker.stop)
        await wait_worker_ready(temporal.client, (stripe, sandbox, worker), "run")
        say(f"==> API on {ports.api}")
        api = await start_api(env, log_dir, bind_api_socket(ports.api), echo=True)
        stack.push_async_callback(api.stop)
        children = (stripe, sandbox, worker, api)
        _print_banner(ports)
        while True:
            for child in children:
                child.check_alive()
            await asyncio.sleep(1)


def run(args: argparse.Namespace) -> int:
    ports = Ports()
    _check_ports_free(ports)
    try:
        ensure_tool(TEMPORAL, out=sys.stdout)
        ensure_tool(STRIPE_MOCK, out=sys.stdout)
    except ToolError as err:
        say(f"error: {err}")
        return 1
    # Restore Python's Ctrl-C handling even when started from a shell that ignores SIGINT for
    # background jobs; asyncio.run then cancels the stack, whose exit stops every process in
    # reverse order.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        asyncio.run(_run_stack(ports))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("\n==> stopped: everything it started is down")
        return 0
    except (RuntimeError, TimeoutError) as err:  # StackError is a RuntimeError
        say(f"error: {err}")
        return 1
    return 0


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


def _tools_env() -> dict[str, str] | None:
    """The environment the tests and the benchmarks start their stack with: the Go tools built
    (once) and named, the sandbox profile. None (said why) when a tool cannot be built."""
    try:
        temporal_bin = ensure_tool(TEMPORAL)
        stripe_bin = ensure_tool(STRIPE_MOCK)
    except ToolError as err:
        say(f"error: {err}")
        return None
    return dict(
        os.environ,
        DEALFLOW_PROFILE="sandbox",  # explicit: the settings default to production
        DEALFLOW_TEMPORAL_BIN=str(temporal_bin),
        DEALFLOW_STRIPE_MOCK_BIN=str(stripe_bin),
    )


def test(args: argparse.Namespace) -> int:
    env = _tools_env()
    if env is None:
        return 1
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
    env = _tools_env()
    if env is None:
        return 1
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
