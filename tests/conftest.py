"""Session-wide real servers: PostgreSQL, the Temporal dev server, the sandbox, a worker, the API.

Nothing here is faked. PostgreSQL is the embedded pgserver (or DATABASE_URL's server, in a fresh
database), Temporal is the CLI dev server built by `make test`, the API is served by uvicorn on a
real port, and the worker is the same `build_worker` that `worker.py` runs. PostgreSQL, the
dev server and stripe-mock are started by the one launcher, `dealflow/stack.py`, as for `make run`
and the benchmarks; the sandbox, the worker and the API run in this process, so tests can reach
into them (the sandbox's stores, the worker's interceptors).
"""

from __future__ import annotations

import asyncio
import os
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from db.engine import make_engine, make_sessionmaker
from dealflow.settings import SANDBOX_FILE, Settings
from dealflow.stack import free_port, fresh_database, start_stripe_mock, temporal_dev_server
from sandbox.server import run_sandbox
from tests.utils.http import LIMITS
from tests.utils.polling import eventually
from worker import build_worker

# The tests run in the sandbox profile, set here explicitly (the default is production): every
# Settings() the tests build and every process they start (worker subprocesses inherit it)
# takes the committed sandbox secrets and talks to the sandbox servers.
os.environ["DEALFLOW_PROFILE"] = "sandbox"


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
async def database_url(state_dir: Path) -> AsyncIterator[str]:
    """A fresh, migrated database for this test session."""
    async with fresh_database(state_dir / "pg", "dealflow_test") as (url, _where):
        yield url


@pytest.fixture(scope="session")
async def temporal_env(state_dir: Path) -> AsyncIterator[WorkflowEnvironment]:
    async with temporal_dev_server(state_dir / "logs" / "temporal.log") as env:
        yield env


@pytest.fixture(scope="session")
def api_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
async def sandbox(state_dir: Path, api_port: int):
    async with run_sandbox(
        state_dir=state_dir / "sandbox",
        interactions_url=f"http://127.0.0.1:{api_port}/v1/webhooks/slack/interactions",
        connect_url=f"http://127.0.0.1:{api_port}/v1/webhooks/docusign",
    ) as sb:
        yield sb


@pytest.fixture(scope="session")
async def stripe_mock(state_dir: Path) -> AsyncIterator[str]:
    """stripe-mock (Stripe's own mock server) on a free port; its HTTP base URL."""
    child, url = await start_stripe_mock(state_dir / "logs")
    yield url
    await child.stop()


@pytest.fixture(scope="session")
def settings(
    database_url: str,
    temporal_env: WorkflowEnvironment,
    sandbox,
    state_dir: Path,
    api_port: int,
    stripe_mock: str,
) -> Settings:
    return Settings(
        profile="sandbox",
        database_url=database_url,
        temporal_address=temporal_env.client.service_client.config.target_host,
        state_dir=state_dir,
        public_base_url=f"http://127.0.0.1:{api_port}",
        sandbox_url=sandbox.http_url,
        slack_api_url=f"{sandbox.http_url}/slack/api/",
        stripe_api_base=stripe_mock,
        crm_api_url=sandbox.http_url,
        docusign_oauth_host=sandbox.https_url.removeprefix("https://"),
        docusign_ca_cert=sandbox.ca_cert_path,
        # Connect webhooks are the fast path; a 2 s poll is the fallback for lost ones.
        signature_timing_override="poll=2,remind=3600,alert=3600,expire=86400",
        # Handoff plans in seconds: a business day is 1 s, reminders 0.5 s before due, the
        # renewal alerts 2 s apart (month-long waits are unit-tested as computed dates).
        handoff_timing_override="day=1,remind=0.5,renewal=2",
        smtp_port=sandbox.smtp_port,
        # Short, so a test that kills a worker sees its activity retried within seconds.
        activity_timeout_seconds=5,
    )


@pytest.fixture(scope="session")
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings.require_database_url())
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessions(engine: AsyncEngine):
    return make_sessionmaker(engine)


@pytest.fixture(scope="session")
async def worker(temporal_client: Client, settings: Settings, sessions):
    async with build_worker(temporal_client, settings, sessions) as w:
        yield w


@pytest.fixture(scope="session")
async def api_url(
    settings: Settings, engine: AsyncEngine, temporal_client: Client, worker, api_port: int
) -> AsyncIterator[str]:
    app = create_app(settings, engine=engine, temporal=temporal_client)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=api_port,
            log_level="warning",
            lifespan="on",
            # At the end of the session, do not wait on a request still in flight (a webhook
            # answered in the background, a client's keep-alive): the servers are going away.
            timeout_graceful_shutdown=5,
        )
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()  # raises what stopped it
        return server.started

    await eventually(started, what="the API")
    yield f"http://127.0.0.1:{api_port}"
    server.should_exit = True
    await task


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30, limits=LIMITS) as client:
        yield client


@pytest.fixture(scope="session")
def api_keys() -> dict[str, str]:
    """email -> API key, from the committed sandbox file."""
    with SANDBOX_FILE.open("rb") as fh:
        return {k["email"]: k["key"] for k in tomllib.load(fh)["api_keys"]}


@pytest.fixture(scope="session")
def auth(api_keys: dict[str, str]):
    def headers(email: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_keys[email]}"}

    return headers
