"""The one launcher of the stack's processes, for ``make run``, the tests and the benchmarks.

PostgreSQL (embedded pgserver, or DATABASE_URL's server), migrations, the Temporal dev server,
stripe-mock, the sandbox, workers and API processes: each started here, waited until it serves,
and stopped in reverse order by the caller's exit stack. ``dealflow/prodstack.py`` reuses these
pieces and adds what differs in production (the real Temporal server, several processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from alembic import command
from alembic.config import Config
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from dealflow.ids import SEARCH_ATTRIBUTES, TASK_QUEUE
from dealflow.settings import PROJECT_ROOT
from dealflow.temporal import DATA_CONVERTER
from dealflow.tools import STRIPE_MOCK, TEMPORAL, find_tool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, *, timeout: float, host: str = "127.0.0.1", what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not port_is_open(port, host):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what or 'service'} did not open {host}:{port} in {timeout:.0f}s")
        time.sleep(0.05)


def start_embedded_postgres(data_dir: Path):  # -> (pgserver.PostgresServer, url)
    """Real PostgreSQL from the pgserver wheel; data kept in ``data_dir``, stopped at exit."""
    import pgserver  # imported here: only the embedded path needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir), cleanup_mode="stop")
    return server, server.get_uri()


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database ``name``, created if missing."""
    parts = urlsplit(url)
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def drop_database(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(url: str) -> None:
    """Apply Alembic migrations up to head."""
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


# --- the launcher: child processes started in order, waited ready, stopped in reverse ----------
#
# `make run` (dealflow/devstack.py), the tests (tests/conftest.py), the benchmarks (bench/stack.py)
# and the production-shaped check (dealflow/prodstack.py) all start their processes with these.

# Hang guards for start-up (not performance expectations): the worker imports WeasyPrint and
# connects; on a cold 2-core machine that is seconds, so these only catch a stack that is stuck.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0

T = TypeVar("T")


class StackError(RuntimeError):
    pass


class Child:
    """A child process in its own session (Ctrl-C reaches us only; we stop it in order).

    Its output goes to ``<log_dir>/<name>.log``; with ``echo`` also to our stdout, each line
    prefixed with the name (``make run`` shows the sandbox, the worker and the API).
    """

    def __init__(
        self,
        name: str,
        proc: asyncio.subprocess.Process,
        log_path: Path,
        log: IO[bytes],
        pump: asyncio.Task[None] | None = None,
    ):
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self._log = log
        self._pump = pump

    @classmethod
    async def start(
        cls,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_dir: Path,
        pass_fds: tuple[int, ...] = (),
        *,
        echo: bool = False,
    ) -> Child:
        await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        log = log_path.open("ab")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if echo else log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
        )
        pump = None
        if echo:
            assert proc.stdout is not None
            pump = asyncio.create_task(_echo(name, proc.stdout, log))
        return cls(name, proc, log_path, log, pump)

    def check_alive(self) -> None:
        if self.proc.returncode is not None:
            raise StackError(
                f"{self.name} exited with code {self.proc.returncode}; last lines of "
                f"{self.log_path}:\n{self.tail()}"
            )

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        try:
            if self.proc.returncode is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    self.proc.kill()
                    await self.proc.wait()
            if self._pump is not None:
                await self._pump  # the pipe is at its end once the process is gone
        finally:
            self._log.close()


async def _echo(name: str, stream: asyncio.StreamReader, log: IO[bytes]) -> None:
    async for line in stream:
        log.write(line)
        log.flush()
        sys.stdout.write(f"{name:>7} | {line.decode(errors='replace')}")
        sys.stdout.flush()


async def until(
    what: str,
    attempt: Callable[[], Awaitable[T | None]],
    timeout: float = START_TIMEOUT,
    children: Iterable[Child] = (),
    interval: float = 0.05,
) -> T:
    """Call ``attempt`` until it returns a value; fail if a child dies or at the hang guard."""
    deadline = time.monotonic() + timeout
    while True:
        for child in children:
            child.check_alive()
        result = await attempt()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise StackError(f"{what} not ready after {timeout:.0f}s (hang guard)")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def fresh_database(
    pg_dir: Path, prefix: str, say: Callable[[str], None] = lambda _: None
) -> AsyncIterator[tuple[str, str]]:
    """(url, where) of a fresh, migrated database; removed at the end.

    On DATABASE_URL's server when it is set, else on the embedded pgserver in ``pg_dir``.
    """
    server_url = os.environ.get("DATABASE_URL")
    pg = None
    if server_url:
        where = "DATABASE_URL's server, temporary database"
    else:
        where = f"embedded pgserver in {pg_dir}"
        pg, server_url = await asyncio.to_thread(start_embedded_postgres, pg_dir)
    say(f"==> PostgreSQL: {where}")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        url = await asyncio.to_thread(with_database, server_url, name)
        say("==> migrations (alembic upgrade head)")
        await asyncio.to_thread(migrate, url)
        yield url, where
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(drop_database, server_url, name)
        if pg is not None:
            await asyncio.to_thread(pg.cleanup)


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Point fds 1 and 2 at ``path`` while a child is spawned, so it inherits the file.

    start_local hands the dev server our stdout/stderr: its banner, and its error logs when it
    is stopped mid-run, would land in our output. Nothing else writes while this is in effect
    (start-up is sequential).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with path.open("ab") as log:
            for fd in saved:
                os.dup2(log.fileno(), fd)
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.asynccontextmanager
async def temporal_dev_server(
    log_path: Path,
    say: Callable[[str], None] = lambda _: None,
    *,
    port: int | None = None,
    ui_port: int | None = None,
    db_file: Path | None = None,
) -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal CLI dev server (``.tools/bin``), with dealflow's search attributes.

    Free ports and an in-memory store unless given (``make run``: 7233, the UI on 8233, SQLite
    in ``.state``).
    """
    binary = find_tool(TEMPORAL)
    if binary is None:
        raise StackError(
            "the Temporal CLI is not built: run `make test`, or set DEALFLOW_TEMPORAL_BIN"
        )
    say(f"==> Temporal dev server ({binary})")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with _output_to(log_path):
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(binary),
            search_attributes=SEARCH_ATTRIBUTES,
            data_converter=DATA_CONVERTER,
            dev_server_log_level="error",
            port=port,
            ui=ui_port is not None,
            ui_port=ui_port,
            dev_server_database_filename=str(db_file) if db_file else None,
        )
    try:
        yield env
    finally:
        await env.shutdown()


async def start_stripe_mock(log_dir: Path, port: int | None = None) -> tuple[Child, str]:
    """stripe-mock (Stripe's own mock server), ready; the child and its HTTP base URL."""
    binary = find_tool(STRIPE_MOCK)
    if binary is None:
        raise StackError(
            "stripe-mock is not built: run `make test`, or set DEALFLOW_STRIPE_MOCK_BIN"
        )
    # stripe-mock takes an address, not a socket: a free port, then probed (a small window).
    port = port or free_port()
    child = await Child.start(
        "stripe-mock",
        # An explicit HTTPS address too: by default it also takes :12112 on every interface.
        [str(binary), "-http-addr", f"127.0.0.1:{port}", "-https-addr", "127.0.0.1:0"],
        dict(os.environ),
        log_dir,
    )

    async def up() -> bool | None:
        return True if await asyncio.to_thread(port_is_open, port) else None

    await until("stripe-mock", up, START_TIMEOUT, (child,))
    return child, f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class SandboxAddresses:
    """Where a sandbox process serves, from the file it writes once both servers answer."""

    http_url: str
    https_url: str
    smtp_port: int
    ca_cert_path: str


async def start_sandbox(
    state_dir: Path,
    log_dir: Path,
    api_url: str,
    *,
    http_port: int = 0,
    smtp_port: int = 0,
    https_port: int = 0,
    echo: bool = False,
) -> tuple[Child, Callable[[], Awaitable[SandboxAddresses]]]:
    """``python -m sandbox`` as a child process, its Slack clicks and Connect events sent to
    ``api_url``; ports 0 are chosen by the system. Returns the child and an awaitable that waits
    until it serves (so the caller can start other things meanwhile)."""
    ready_file = state_dir / "sandbox-ready.json"
    ready_file.unlink(missing_ok=True)
    child = await Child.start(
        "sandbox",
        [
            sys.executable,
            "-m",
            "sandbox",
            "--state-dir",
            str(state_dir / "sandbox"),
            "--ready-file",
            str(ready_file),
            "--http-port",
            str(http_port),
            "--smtp-port",
            str(smtp_port),
            "--https-port",
            str(https_port),
            "--interactions-url",
            f"{api_url}/v1/webhooks/slack/interactions",
            "--connect-url",
            f"{api_url}/v1/webhooks/docusign",
            "--log-level",
            "INFO" if echo else "WARNING",
        ],
        # Explicit: the settings default to production.
        dict(os.environ, DEALFLOW_PROFILE="sandbox", PYTHONUNBUFFERED="1"),
        log_dir,
        echo=echo,
    )

    async def read() -> SandboxAddresses | None:
        if not ready_file.exists():
            return None
        return SandboxAddresses(**json.loads(ready_file.read_text()))

    async def ready() -> SandboxAddresses:
        return await until("sandbox", read, START_TIMEOUT, (child,))

    return child, ready


def service_env(
    *,
    database_url: str,
    temporal_address: str,
    state_dir: Path,
    public_base_url: str,
    sandbox: SandboxAddresses,
    stripe_url: str,
    **extra: str,
) -> dict[str, str]:
    """The environment of a worker or API process on this stack (the sandbox profile)."""
    env = dict(
        os.environ,
        DEALFLOW_PROFILE="sandbox",  # explicit: the settings default to production
        DEALFLOW_TASK_QUEUE=TASK_QUEUE,
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal_address,
        DEALFLOW_STATE_DIR=str(state_dir),  # shared: the worker writes documents, APIs serve
        DEALFLOW_PUBLIC_BASE_URL=public_base_url,
        DEALFLOW_SANDBOX_URL=sandbox.http_url,
        DEALFLOW_SMTP_PORT=str(sandbox.smtp_port),
        DEALFLOW_SLACK_API_URL=f"{sandbox.http_url}/slack/api/",
        DEALFLOW_CRM_API_URL=sandbox.http_url,
        DEALFLOW_DOCUSIGN_OAUTH_HOST=sandbox.https_url.removeprefix("https://"),
        DEALFLOW_DOCUSIGN_CA_CERT=sandbox.ca_cert_path,
        DEALFLOW_STRIPE_API_BASE=stripe_url,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


WORKER_ARGV = [sys.executable, "worker.py"]


async def start_worker(
    env: dict[str, str], log_dir: Path, name: str = "worker", *, echo: bool = False
) -> Child:
    return await Child.start(name, WORKER_ARGV, env, log_dir, echo=echo)


def bind_api_socket(port: int = 0) -> socket.socket:
    """The API's listening socket, bound here and handed to uvicorn (``--fd``): with port 0 no
    window in which another process could take a port picked as free."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


async def start_api(
    env: dict[str, str],
    log_dir: Path,
    sock: socket.socket,
    name: str = "api",
    *,
    echo: bool = False,
    ready_path: str = "/readyz",
) -> Child:
    """uvicorn serving ``api.app:create_app`` on ``sock`` (closed here once the child holds
    it), waited until ``ready_path`` answers 200."""
    port = sock.getsockname()[1]
    try:
        child = await Child.start(
            name,
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.app:create_app",
                "--factory",
                "--fd",
                str(sock.fileno()),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env,
            log_dir,
            pass_fds=(sock.fileno(),),
            echo=echo,
        )
    finally:
        sock.close()

    async def ready() -> bool | None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            try:
                resp = await http.get(ready_path)
            except httpx.TransportError:
                return None
        return True if resp.status_code == 200 else None

    await until(f"API {name} on {port}", ready, START_TIMEOUT, (child,))
    return child


async def wait_worker_ready(client: Client, children: Iterable[Child], prefix: str) -> None:
    """A worker is ready once it has run a workflow end to end: one NoopWorkflow."""
    from workflows.noop import NoopWorkflow  # the launcher needs no workflow code otherwise

    task = asyncio.create_task(
        client.execute_workflow(
            NoopWorkflow.run, id=f"{prefix}-ready-{uuid.uuid4().hex}", task_queue=TASK_QUEUE
        )
    )
    try:

        async def done() -> bool | None:
            if not task.done():
                return None
            task.result()
            return True

        await until("a worker runs a workflow", done, START_TIMEOUT, tuple(children))
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
