"""Session-wide real servers: PostgreSQL, the Temporal dev server, the sandbox, a worker, the API.

Nothing here is faked. PostgreSQL is the embedded pgserver (or DATABASE_URL's server, in a fresh
database), Temporal is the CLI dev server built by `make test`, the API is served by uvicorn on a
real port, and the worker is the same `build_worker` that `worker.py` runs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from db.engine import make_engine, make_sessionmaker
from dealflow.ids import SEARCH_ATTRIBUTES
from dealflow.settings import SANDBOX_FILE, Settings
from dealflow.stack import (
    drop_database,
    free_port,
    migrate,
    start_embedded_postgres,
    wait_for_port,
    with_database,
)
from dealflow.temporal import DATA_CONVERTER
from dealflow.tools import STRIPE_MOCK, TEMPORAL, find_tool
from sandbox.server import run_sandbox
from worker import build_worker

# The tests run in the sandbox profile, set here explicitly (the default is production): every
# Settings() the tests build and every process they start (worker subprocesses inherit it)
# takes the committed sandbox secrets and talks to the sandbox servers.
os.environ["DEALFLOW_PROFILE"] = "sandbox"


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def database_url(state_dir: Path):
    """A fresh, migrated database for this test session."""
    server_url = os.environ.get("DATABASE_URL")
    pg = None
    if not server_url:
        pg, server_url = start_embedded_postgres(state_dir / "pg")
    name = f"dealflow_test_{uuid.uuid4().hex[:8]}"
    url = with_database(server_url, name)
    migrate(url)
    yield url
    if pg is not None:
        pg.cleanup()  # the embedded server's folder is temporary: nothing to drop
    else:
        drop_database(server_url, name)


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    binary = find_tool(TEMPORAL)
    if binary is None:
        pytest.fail("the Temporal CLI is not built: run the tests with `make test`")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=DATA_CONVERTER,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


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
def stripe_mock() -> Iterator[str]:
    """stripe-mock (Stripe's own mock server) on free ports; its HTTP base URL."""
    binary = find_tool(STRIPE_MOCK)
    if binary is None:
        pytest.fail("stripe-mock is not built: run the tests with `make test`")
    port = free_port()
    # An explicit HTTPS address too: by default it also takes :12112, which `make run` holds.
    proc = subprocess.Popen(
        [str(binary), "-http-addr", f"127.0.0.1:{port}", "-https-addr", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30, what="stripe-mock")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{api_port}"
    server.should_exit = True
    await task


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # uvicorn closes a keep-alive connection idle for 5 s; reusing one at that moment reads a
    # closed socket (httpx.ReadError), e.g. after a test spent a while in the browser. Ours
    # expire first.
    limits = httpx.Limits(keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=api_url, timeout=30, limits=limits) as client:
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
