"""Pieces of the chaos test: a Temporal dev server that can be restarted on the same SQLite file
and port, a worker process SIGKILLed every few seconds, a recording proxy in front of
stripe-mock, and API calls that ride out both.

Nothing here fakes our own code: the worker is ``python worker.py``, the API is ``create_app``
served by uvicorn, the dev server is the Temporal CLI, and Stripe is stripe-mock behind a proxy
that only forwards and writes down what it forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from dealflow.ids import search_attribute_cli_args
from dealflow.settings import Settings
from dealflow.stack import free_port
from tests.utils.history import history_runs
from tests.utils.polling import eventually
from tests.utils.workers import start_worker

# A dev server on SQLite starts in 2-3 s on the 2-core machine; this only bounds a broken start.
DEV_SERVER_START_TIMEOUT = 60
# A worker process imports the whole project before it polls (several seconds on a busy
# machine); past this with the server up, something is wrong and the test says so.
WORKER_START_TIMEOUT = 60


@contextlib.asynccontextmanager
async def serve(app: Any, port: int) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn in this event loop on ``port``; its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            # At the end, do not wait on a request still in flight: everything is going away.
            timeout_graceful_shutdown=5,
        )
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()  # raises what stopped it
        return server.started

    await eventually(started, what=f"uvicorn on port {port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class DevServer:
    """A Temporal dev server of our own, persisted to a SQLite file, restartable in place.

    The session's dev server is in-memory (a restart would lose every workflow); this one keeps
    its state in ``chaos.db`` and comes back on the same port, as a real cluster restart would.
    """

    def __init__(self, binary: Path, directory: Path) -> None:
        self.binary = binary
        self.db_file = directory / "chaos.db"
        self.log_path = directory / "temporal.log"
        self.port = free_port()
        self.restarts = 0
        self.down_seconds = 0.0
        self.up = asyncio.Event()  # set while the server answers
        self._proc: subprocess.Popen | None = None
        self._probe: Client | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        argv = [
            str(self.binary),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db-filename",
            str(self.db_file),
            "--namespace",
            "default",
            "--log-level",
            "warn",
            *search_attribute_cli_args(),
        ]
        self._proc = _spawn(argv, self.log_path)
        if self._probe is None:
            self._probe = await Client.connect(self.address, lazy=True)
        await eventually(
            self._answers, timeout=DEV_SERVER_START_TIMEOUT, what="the chaos dev server"
        )
        self.up.set()

    async def _answers(self) -> bool:
        assert self._proc is not None and self._probe is not None
        if self._proc.poll() is not None:
            raise AssertionError(
                f"the dev server exited ({self._proc.returncode}): see {self.log_path}"
            )
        try:
            await self._probe.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace="default"), timeout=timedelta(seconds=2)
            )
        except (RPCError, RuntimeError):  # RuntimeError: a lazy client's first connect
            return False
        return True

    async def stop(self) -> None:
        self.up.clear()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    async def restart(self) -> None:
        """Stop it (SIGTERM, as an orchestrator would) and start it again on the same file."""
        began = time.monotonic()
        await self.stop()
        await self.start()
        self.down_seconds += time.monotonic() - began
        self.restarts += 1


@dataclass
class WorkerChaos:
    """``python worker.py`` processes, the polling one SIGKILLed every ``interval`` seconds (drawn
    at random) until ``stop`` is set; the last one is then stopped gracefully. Each replacement
    is started when the interval before the next kill begins, so it is importing while the
    current one works; the queue is without a poller only from a kill until the replacement
    polls (``gaps``).

    The kill interval is the chaos parameter: it is drawn from a seeded generator, so a failing
    run can be repeated with the same sequence of intervals.
    """

    settings: Settings
    server: DevServer
    interval: tuple[float, float] = (5.0, 10.0)
    seed: int = 12
    kills: int = 0
    spawns: int = 0
    exited_alone: int = 0  # a worker started while the server was away gives up by itself
    gaps: list[float] = field(default_factory=list)  # kill -> the replacement polling, seconds
    _client: Client | None = field(default=None, repr=False)

    async def run(self, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        self._client = await Client.connect(self.server.address, lazy=True)
        current: subprocess.Popen | None = None
        upcoming: subprocess.Popen | None = None
        try:
            while not stop.is_set():
                await self.server.up.wait()
                if current is None:  # the first worker, or after one died with the server away
                    current = await self._started(stop)
                    continue
                # The replacement starts importing now, while the current one works: a worker
                # takes seconds to start on a busy machine, and the kill below would otherwise
                # leave the queue without a poller for all of them.
                upcoming = self._spawn()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), rng.uniform(*self.interval))
                if stop.is_set():
                    break
                self._kill(current)
                killed_at = time.monotonic()
                await asyncio.to_thread(current.wait)
                current = None
                if await self._until_polling(upcoming, stop):
                    self.gaps.append(time.monotonic() - killed_at)
                    current, upcoming = upcoming, None
                else:  # the server went away meanwhile, or the run ended
                    self._kill(upcoming)
                    await asyncio.to_thread(upcoming.wait)
                    upcoming = None
        finally:
            for proc in (current, upcoming):
                if proc is not None and proc.poll() is None:
                    await asyncio.to_thread(_stop_gracefully, proc)

    def _spawn(self) -> subprocess.Popen:
        self.spawns += 1
        # Two renderers (the default leaves one core free: one renderer on this 2-core machine):
        # five deals render at once here and a worker lives only seconds, so a second renderer
        # halves the renders its kill interrupts.
        return start_worker(self.settings, self.settings.task_queue, render_processes=2)

    async def _started(self, stop: asyncio.Event) -> subprocess.Popen | None:
        proc = self._spawn()
        if await self._until_polling(proc, stop):
            return proc
        self._kill(proc)
        await asyncio.to_thread(proc.wait)
        return None

    def _kill(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            self.kills += 1
        else:
            self.exited_alone += 1

    async def _until_polling(self, proc: subprocess.Popen, stop: asyncio.Event) -> bool:
        """Wait until the server lists this process as a poller of the workflow task queue
        (its identity is ``<pid>@<host>``). False if it exited, the server went away or the
        run ended first."""
        assert self._client is not None
        identity = f"{proc.pid}@"
        request = DescribeTaskQueueRequest(
            namespace="default",
            task_queue=TaskQueue(name=self.settings.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )

        async def settled() -> str | None:
            if stop.is_set() or proc.poll() is not None or not self.server.up.is_set():
                return "gone"
            try:
                pollers = (
                    await self._client.workflow_service.describe_task_queue(
                        request, timeout=timedelta(seconds=2)
                    )
                ).pollers
            except (RPCError, RuntimeError):
                return None
            return "polling" if any(p.identity.startswith(identity) for p in pollers) else None

        state = await eventually(settled, timeout=WORKER_START_TIMEOUT, what="the worker polling")
        return state == "polling"


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen:
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def _stop_gracefully(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class StripeCall:
    method: str
    path: str
    idempotency_key: str | None
    form: dict[str, str]


class StripeRecorder:
    """A forwarding proxy in front of stripe-mock that writes down every request it forwards.

    stripe-mock keeps no state, so it cannot say how many invoices a deal got. Real Stripe makes
    one object per Idempotency-Key (a retry with the same key returns the first), so the number
    of invoices a deal would have is the number of distinct keys its invoice creations used.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.calls: list[StripeCall] = []
        self._http = httpx.AsyncClient(base_url=upstream, timeout=30)
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._forward,
                    methods=["GET", "POST", "DELETE", "PUT", "PATCH"],
                )
            ]
        )

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        form = (
            dict(parse_qsl(body.decode(), keep_blank_values=True))
            if "form-urlencoded" in request.headers.get("content-type", "")
            else {}
        )
        # Written down before forwarding: a request that reached Stripe counts even if its
        # answer never made it back to the worker (killed meanwhile).
        self.calls.append(
            StripeCall(
                request.method, request.url.path, request.headers.get("idempotency-key"), form
            )
        )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        upstream = await self._http.request(
            request.method,
            request.url.path,
            params=request.query_params.multi_items(),
            content=body,
            headers=headers,
        )
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS},
        )

    def created_per_deal(self, path: str) -> Counter:
        """deal id -> distinct Idempotency-Keys of POSTs to ``path`` (= objects real Stripe
        would have made)."""
        keys: dict[str, set[str | None]] = {}
        for call in self.calls:
            if call.method == "POST" and call.path == path:
                deal = call.form.get("metadata[dealflow_deal_id]", "?")
                keys.setdefault(deal, set()).add(call.idempotency_key)
        return Counter({deal: len(k) for deal, k in keys.items()})

    async def aclose(self) -> None:
        await self._http.aclose()


_HOP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}
)


class ApiRider:
    """API calls that ride out worker kills and the dev-server restart.

    A 5xx or a dropped connection is retried until the deadline (a real client does the same
    with Retry-After); any other unexpected status fails at once. Every status seen is
    counted, so the test can report how the API behaved while things were away.
    """

    def __init__(self, http: httpx.AsyncClient, *, deadline: float, every: float = 0.5) -> None:
        self.http = http
        self.deadline = deadline  # time.monotonic() by which every call must have succeeded
        self.every = every  # between two attempts of one call: spares the 2 shared cores
        self.seen: Counter = Counter()

    async def call(
        self,
        method: str,
        path: str,
        *,
        accept: Callable[[httpx.Response], bool],
        retry: frozenset[int] = frozenset(),
        **kwargs: Any,
    ) -> httpx.Response:
        """``method path`` until ``accept(response)``; 5xx, dropped connections and the
        statuses in ``retry`` are tried again, anything else fails."""

        async def attempt() -> httpx.Response | None:
            try:
                resp = await self.http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                self.seen[type(err).__name__] += 1
                return await self._pause()
            self.seen[resp.status_code] += 1
            if accept(resp):
                return resp
            if resp.status_code >= 500 or resp.status_code in retry:
                return await self._pause()
            raise AssertionError(f"{method} {path}: {resp.status_code} {resp.text}")

        return await eventually(
            attempt, timeout=max(1.0, self.deadline - time.monotonic()), what=f"{method} {path}"
        )

    async def until(
        self, probe: Callable[[], Awaitable[Any]], *, what: str
    ) -> Any:  # a condition read through the API, polled with the same spacing
        async def spaced() -> Any:
            value = await probe()
            return value or await self._pause()

        return await eventually(
            spaced, timeout=max(1.0, self.deadline - time.monotonic()), what=what
        )

    async def _pause(self) -> None:
        await asyncio.sleep(self.every)  # a poll interval; the deadline bounds the wait
        return None


class Snapshot:
    """One read of something many waiters poll (the sandbox's Slack posts, its envelopes),
    taken at most once per ``every`` seconds and shared, so twenty waiters cost one request."""

    def __init__(self, fetch: Callable[[], Awaitable[Any]], *, every: float = 0.5) -> None:
        self._fetch = fetch
        self._every = every
        self._value: Any = None
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        async with self._lock:
            if time.monotonic() - self._at >= self._every:
                self._value = await self._fetch()
                self._at = time.monotonic()
            return self._value


async def diagnose(address: str, workflow_id: str) -> dict[str, Any]:
    """What a stuck workflow is waiting on: its status, pending activities (attempt, last
    failure) and the last events of its history (for the failure message and the report)."""
    client = await Client.connect(address)
    handle = client.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe()
        raw = desc.raw_description
        events = [e async for e in handle.fetch_history_events()]
    except RPCError as err:
        return {"workflow_id": workflow_id, "error": str(err)}
    return {
        "workflow_id": workflow_id,
        "status": desc.status.name if desc.status else None,
        "history_length": len(events),
        "pending_activities": [
            {
                "type": a.activity_type.name,
                "attempt": a.attempt,
                "state": a.state,
                "last_failure": a.last_failure.message[:200],
            }
            for a in raw.pending_activities
        ],
        "pending_children": [c.workflow_id for c in raw.pending_children],
        "pending_workflow_task_attempt": raw.pending_workflow_task.attempt
        if raw.HasField("pending_workflow_task")
        else None,
        "last_events": [
            f"{e.event_id}:{e.WhichOneof('attributes').removesuffix('_event_attributes')}"
            for e in events[-12:]
        ],
    }


async def attempts_needed(address: str, task_queue: str) -> dict[str, dict[str, int]]:
    """Per activity type, over every workflow of the run: how many executions needed a retry and
    the most attempts one needed. The margin to the retry budget (a kill that lands mid-activity
    costs one attempt; past the budget the workflow parks), as the run's histories tell it."""
    client = await Client.connect(address)
    executions: Counter[str] = Counter()
    retried: Counter[str] = Counter()
    most: Counter[str] = Counter()
    async for wf in client.list_workflows(f"TaskQueue = '{task_queue}'"):
        for run in await history_runs(client.get_workflow_handle(wf.id, run_id=wf.run_id)):
            if run.attempt:
                executions[run.type] += 1
                retried[run.type] += run.attempt > 1
                most[run.type] = max(most[run.type], run.attempt)
    return {
        kind: {"executions": n, "retried": retried[kind], "most attempts": most[kind]}
        for kind, n in sorted(executions.items())
    }


async def deliveries_completed(address: str, workflow_id: str) -> set[tuple[str, str]]:
    """(step id, purpose) of each ``deliver`` activity an approval chain saw complete. A request
    whose stage ended first (decided from the copy that went out) has its delivery cancelled,
    and the copy still to go is not sent: a decided step needs no request."""
    client = await Client.connect(address)
    return {
        (run.input["step"]["step_id"], run.input["purpose"])
        for run in await history_runs(client.get_workflow_handle(workflow_id), "deliver")
        if run.completed
    }
