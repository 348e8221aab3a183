"""The real stack for benchmarking, as one async context manager (cf. tests/conftest.py).

    async with bench_stack() as stack:
        stack.client     # Temporal client (pydantic data converter)
        stack.api_url    # the API, serving on a free port

In order: PostgreSQL (embedded pgserver in a temp dir, or DATABASE_URL's server with a fresh
database dropped at the end), migrations, the Temporal dev server (``start_local``), the sandbox
(a separate process), stripe-mock (a separate process), the worker (a separate process), the API
(a separate process). Everything stops in reverse order when the block exits, also on Ctrl-C
(asyncio cancels the main task; the exits below still run).

Process layout, and why:

* The worker is its own process (``python worker.py``), as in production, so the load generator
  does not share its event loop or its GIL: a slow poll loop here cannot delay a workflow task.
* The API is its own process too (uvicorn, as ``make run`` starts it) rather than in-process.
  The benchmark times requests with this process's clock; if the API served them on the same
  event loop, the figures would include the load generator's own scheduling (a coroutine
  polling a query delays the handler, and the handler delays the timestamp), which no real
  client sees. The cost is a second or two of start-up.
* The sandbox (Slack, DocuSign, CRM, SMTP) is its own process (``python -m bench.sandbox_proc``)
  for the same reason: the approval and signature scenarios measure paths through it (the worker
  posts Slack DMs, the Connect webhook goes out from it, closing calls its CRM), so it must not
  wait on the load generator's loop. Its Slack interactions and DocuSign Connect URLs point at
  the API, as in ``tests/conftest.py``.
* stripe-mock (Stripe's own mock server) stands in for Stripe, as in the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import httpx
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from dealflow.ids import SEARCH_ATTRIBUTES, TASK_QUEUE
from dealflow.settings import PROJECT_ROOT
from dealflow.stack import (
    drop_database,
    free_port,
    migrate,
    port_is_open,
    start_embedded_postgres,
    with_database,
)
from dealflow.temporal import DATA_CONVERTER
from dealflow.tools import STRIPE_MOCK, TEMPORAL, find_tool
from workflows.noop import NoopWorkflow

T = TypeVar("T")

# Hang guards for start-up (not performance expectations): the worker imports WeasyPrint and
# connects; on a cold 2-core machine that is seconds, so these only catch a stack that is stuck.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0


class StackError(RuntimeError):
    pass


@dataclass
class BenchStack:
    client: Client
    api_url: str
    sandbox_url: str  # the sandbox's HTTP base (its /_sandbox control API)
    temporal_address: str
    task_queue: str
    state_dir: Path
    database: str  # where the database lives, for the report
    logs: dict[str, Path]
    database_url: str = ""  # for scenarios that seed the database directly (bench/lists.py)
    pids: dict[str, int] = field(default_factory=dict)  # child processes, for a profiler


class Child:
    """A child process in its own session (Ctrl-C reaches us only; we stop it in order)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path, log: IO):
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self._log = log

    @classmethod
    async def start(
        cls,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_dir: Path,
        pass_fds: tuple[int, ...] = (),
    ) -> Child:
        log_path = log_dir / f"{name}.log"
        log = log_path.open("ab")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
        )
        return cls(name, proc, log_path, log)

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
        finally:
            self._log.close()


async def _until(
    what: str, attempt: Callable[[], Awaitable[T | None]], children: list[Child], timeout: float
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
            raise StackError(f"{what} not ready after {timeout:.0f}s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _database(state_dir: Path, say: Callable[[str], None]) -> AsyncIterator[tuple[str, str]]:
    """(url, description) of a fresh, migrated database; removed at the end."""
    server_url = os.environ.get("DATABASE_URL")
    pg = None
    if server_url:
        where = "DATABASE_URL's server, temporary database"
        say(f"==> PostgreSQL: {where}")
    else:
        where = "embedded pgserver in a temp dir"
        say(f"==> PostgreSQL: {where}")
        pg, server_url = await asyncio.to_thread(start_embedded_postgres, state_dir / "pg")
    name = f"dealflow_bench_{uuid.uuid4().hex[:8]}"
    try:
        url = await asyncio.to_thread(with_database, server_url, name)
        say("==> migrations")
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
    is stopped mid-run, would land in the benchmark's output. Nothing else writes while this is
    in effect (start-up is sequential).
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
async def _temporal(
    say: Callable[[str], None], log_path: Path
) -> AsyncIterator[WorkflowEnvironment]:
    binary = find_tool(TEMPORAL)
    if binary is None:
        raise StackError(
            "the Temporal CLI is not built: run `make bench`, or set DEALFLOW_TEMPORAL_BIN"
        )
    say(f"==> Temporal dev server ({binary})")
    with _output_to(log_path):
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(binary),
            search_attributes=SEARCH_ATTRIBUTES,
            data_converter=DATA_CONVERTER,
            dev_server_log_level="error",
        )
    try:
        yield env
    finally:
        await env.shutdown()


@contextlib.asynccontextmanager
async def bench_stack(say: Callable[[str], None] = print) -> AsyncIterator[BenchStack]:
    async with contextlib.AsyncExitStack() as stack:
        state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dealflow-bench-")))
        log_dir = state_dir / "logs"
        log_dir.mkdir()
        database_url, where = await stack.enter_async_context(_database(state_dir, say))
        env = await stack.enter_async_context(_temporal(say, log_dir / "temporal.log"))
        client = env.client
        temporal_address = client.service_client.config.target_host

        # The API's listening socket is bound here and handed to uvicorn (--fd): no window in
        # which another process on this machine (a parallel test run) could take a "free" port.
        # Bound first: the sandbox needs the API's address for Slack clicks and Connect.
        api_sock = socket.socket()
        api_sock.bind(("127.0.0.1", 0))
        api_sock.listen(1024)
        stack.callback(api_sock.close)  # closed below once the API holds it; twice is harmless
        api_port = api_sock.getsockname()[1]
        api_url = f"http://127.0.0.1:{api_port}"
        children: list[Child] = []

        say("==> sandbox (separate process)")
        ready_file = state_dir / "sandbox-ready.json"
        sandbox = await Child.start(
            "sandbox",
            [
                sys.executable,
                "-m",
                "bench.sandbox_proc",
                "--state-dir",
                str(state_dir / "sandbox"),
                "--ready-file",
                str(ready_file),
                "--interactions-url",
                f"{api_url}/v1/webhooks/slack/interactions",
                "--connect-url",
                f"{api_url}/v1/webhooks/docusign",
            ],
            # Explicit: the settings default to production.
            dict(os.environ, DEALFLOW_PROFILE="sandbox", PYTHONUNBUFFERED="1"),
            log_dir=log_dir,
        )
        stack.push_async_callback(sandbox.stop)
        children.append(sandbox)

        async def sandbox_ready() -> dict | None:
            if not ready_file.exists():
                await asyncio.sleep(0.05)
                return None
            return json.loads(ready_file.read_text())

        sb = await _until("sandbox", sandbox_ready, children, START_TIMEOUT)

        stripe_bin = find_tool(STRIPE_MOCK)
        if stripe_bin is None:
            raise StackError(
                "stripe-mock is not built: `make test` builds it, or set DEALFLOW_STRIPE_MOCK_BIN"
            )
        # stripe-mock takes an address, not a socket: a free port, then probed (a small window).
        stripe_port = free_port()
        say(f"==> stripe-mock (separate process, on {stripe_port})")
        stripe = await Child.start(
            "stripe-mock",
            # An explicit HTTPS address too: by default it also takes :12112.
            [
                str(stripe_bin),
                "-http-addr",
                f"127.0.0.1:{stripe_port}",
                "-https-addr",
                "127.0.0.1:0",
            ],
            dict(os.environ),
            log_dir=log_dir,
        )
        stack.push_async_callback(stripe.stop)
        children.append(stripe)

        async def stripe_ready() -> bool | None:
            return True if await asyncio.to_thread(port_is_open, stripe_port) else None

        await _until("stripe-mock", stripe_ready, children, START_TIMEOUT)

        child_env = dict(
            os.environ,
            DEALFLOW_PROFILE="sandbox",
            DEALFLOW_TASK_QUEUE=TASK_QUEUE,
            DATABASE_URL=database_url,
            TEMPORAL_ADDRESS=temporal_address,
            DEALFLOW_STATE_DIR=str(state_dir),
            DEALFLOW_PUBLIC_BASE_URL=api_url,
            DEALFLOW_SANDBOX_URL=sb["http_url"],
            DEALFLOW_SMTP_PORT=str(sb["smtp_port"]),
            DEALFLOW_SLACK_API_URL=f"{sb['http_url']}/slack/api/",
            DEALFLOW_CRM_API_URL=sb["http_url"],
            DEALFLOW_DOCUSIGN_OAUTH_HOST=sb["https_url"].removeprefix("https://"),
            DEALFLOW_DOCUSIGN_CA_CERT=sb["ca_cert_path"],
            DEALFLOW_STRIPE_API_BASE=f"http://127.0.0.1:{stripe_port}",
            PYTHONUNBUFFERED="1",
        )

        say("==> worker (separate process)")
        worker = await Child.start(
            "worker", [sys.executable, "worker.py"], child_env, log_dir=log_dir
        )
        stack.push_async_callback(worker.stop)
        children.append(worker)

        say(f"==> API (separate process, uvicorn on {api_port})")
        api = await Child.start(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.app:create_app",
                "--factory",
                "--fd",
                str(api_sock.fileno()),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            child_env,
            log_dir=log_dir,
            pass_fds=(api_sock.fileno(),),
        )
        api_sock.close()  # the API holds it now
        stack.push_async_callback(api.stop)
        children.append(api)

        # The worker is ready once it has run a workflow end to end: one NoopWorkflow.
        noop_task = asyncio.create_task(
            client.execute_workflow(
                NoopWorkflow.run, id=f"bench-ready-{uuid.uuid4().hex}", task_queue=TASK_QUEUE
            )
        )
        try:

            async def noop_done() -> bool | None:
                if not noop_task.done():
                    await asyncio.sleep(0.05)
                    return None
                noop_task.result()
                return True

            await _until("worker", noop_done, children, START_TIMEOUT)
        finally:
            noop_task.cancel()
            with contextlib.suppress(BaseException):
                await noop_task

        http = await stack.enter_async_context(httpx.AsyncClient(base_url=api_url, timeout=5))

        async def api_ready() -> bool | None:
            try:
                resp = await http.get("/readyz")
            except httpx.TransportError:
                return None
            return True if resp.status_code == 200 else None

        await _until("API", api_ready, children, START_TIMEOUT)

        yield BenchStack(
            client=client,
            api_url=api_url,
            sandbox_url=sb["http_url"],
            temporal_address=temporal_address,
            task_queue=TASK_QUEUE,
            state_dir=state_dir,
            database=where,
            logs={c.name: c.log_path for c in children},
            database_url=database_url,
            pids={c.name: c.proc.pid for c in children},
        )
        for child in children:
            child.check_alive()
        say("==> stopping the stack")
