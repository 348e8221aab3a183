"""The real stack for benchmarking, as one async context manager, from ``dealflow/stack.py``.

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
* The sandbox (Slack, DocuSign, CRM, SMTP) is its own process (``python -m sandbox``)
  for the same reason: the approval and signature scenarios measure paths through it (the worker
  posts Slack DMs, the Connect webhook goes out from it, closing calls its CRM), so it must not
  wait on the load generator's loop. Its Slack interactions and DocuSign Connect URLs point at
  the API, as in ``tests/conftest.py``.
* stripe-mock (Stripe's own mock server) stands in for Stripe, as in the tests.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from dealflow.ids import TASK_QUEUE
from dealflow.stack import (
    Child,
    bind_api_socket,
    fresh_database,
    service_env,
    start_api,
    start_sandbox,
    start_stripe_mock,
    start_worker,
    temporal_dev_server,
    wait_worker_ready,
)


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


@contextlib.asynccontextmanager
async def bench_stack(say: Callable[[str], None] = print) -> AsyncIterator[BenchStack]:
    async with contextlib.AsyncExitStack() as stack:
        state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dealflow-bench-")))
        log_dir = state_dir / "logs"
        log_dir.mkdir()
        database_url, where = await stack.enter_async_context(
            fresh_database(state_dir / "pg", "dealflow_bench", say)
        )
        env = await stack.enter_async_context(temporal_dev_server(log_dir / "temporal.log", say))
        client = env.client
        temporal_address = client.service_client.config.target_host

        # Bound first: the sandbox needs the API's address for Slack clicks and Connect.
        api_sock = bind_api_socket()
        stack.callback(api_sock.close)  # closed once the API holds it; twice is harmless
        api_url = f"http://127.0.0.1:{api_sock.getsockname()[1]}"
        children: list[Child] = []

        say("==> sandbox (separate process)")
        sandbox, sandbox_ready = await start_sandbox(state_dir, log_dir, api_url)
        stack.push_async_callback(sandbox.stop)
        children.append(sandbox)
        sb = await sandbox_ready()

        say("==> stripe-mock (separate process)")
        stripe, stripe_url = await start_stripe_mock(log_dir)
        stack.push_async_callback(stripe.stop)
        children.append(stripe)

        child_env = service_env(
            database_url=database_url,
            temporal_address=temporal_address,
            state_dir=state_dir,
            public_base_url=api_url,
            sandbox=sb,
            stripe_url=stripe_url,
        )
        say("==> worker (separate process)")
        worker = await start_worker(child_env, log_dir)
        stack.push_async_callback(worker.stop)
        children.append(worker)
        await wait_worker_ready(client, children, "bench")

        say(f"==> API (separate process, uvicorn on {api_url})")
        api = await start_api(child_env, log_dir, api_sock)
        stack.push_async_callback(api.stop)
        children.append(api)

        yield BenchStack(
            client=client,
            api_url=api_url,
            sandbox_url=sb.http_url,
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
