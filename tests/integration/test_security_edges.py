"""Production by default (no sandbox routes), and no token in the API's access log."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import httpx
import pytest
import uvicorn
from uvicorn.logging import AccessFormatter

from api.app import create_app
from dealflow.links import make_token
from dealflow.settings import SECRET_FIELDS, Settings
from dealflow.stack import free_port
from tests.unit.test_settings_profile import STRONG


async def test_an_app_without_a_profile_is_production_and_hides_the_sandbox(
    monkeypatch, engine, temporal_client, settings
):
    monkeypatch.delenv("DEALFLOW_PROFILE", raising=False)
    monkeypatch.setenv("DATABASE_URL", settings.require_database_url())
    for name in SECRET_FIELDS:
        monkeypatch.setenv(f"DEALFLOW_{name.upper()}", STRONG[name])
    production = Settings()
    assert production.profile == "production"
    app = create_app(production, engine=engine, temporal=temporal_client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for path in ("/_sandbox/config", "/_sandbox/mail/messages", "/_sandbox/crm/deals/x"):
                resp = await client.get(path)
                assert resp.status_code == 404, path
                assert resp.json()["error"]["code"] == "not_found"
                assert "sandbox" not in resp.text.lower().replace("/_sandbox", ""), path
            assert (await client.get("/healthz")).status_code == 200


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers, which would take over pytest's Ctrl-C."""

    def install_signal_handlers(self) -> None:
        pass


@pytest.fixture
def access_log():
    """What uvicorn's access logger writes, formatted by uvicorn's own access formatter."""
    logger = logging.getLogger("uvicorn.access")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))
    # The server below sets uvicorn's log levels; the session's own server logs at warning.
    levels = {name: logging.getLogger(name).level for name in ("uvicorn.access", "uvicorn.error")}
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


async def test_link_and_unsubscribe_tokens_never_reach_the_access_log(
    settings, engine, temporal_client, access_log
):
    # A real server with the access log on, started the way every deployment starts the API:
    # through create_app, whose lifespan installs the logging configuration.
    app = create_app(settings, engine=engine, temporal=temporal_client)
    port = free_port()
    server = _EmbeddedServer(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, log_level="info", access_log=True
        )
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.01)
    link_token = make_token(settings.secret("link_signing_key"), "tok_nosuchlink", 4102444800)
    unsubscribe_token = "unsub_3f2a9c1e7b6d4e119a0c5d8e2f4b1a77"
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            link = await client.get(f"/v1/approvals/links/{link_token}")
            unsub = await client.get(f"/v1/unsubscribe/{unsubscribe_token}?utm=x")
            unsub_post = await client.post(f"/v1/unsubscribe/{unsubscribe_token}")
    finally:
        server.should_exit = True
        await task
    assert link.status_code < 500 and unsub.status_code < 500 and unsub_post.status_code < 500
    log = access_log.getvalue()
    assert link_token not in log and link_token.split(".")[-1] not in log
    assert unsubscribe_token not in log
    # The route stays recognisable, with its method, query and status.
    assert f'"GET /v1/approvals/links/[redacted] HTTP/1.1" {link.status_code}' in log
    assert f'"GET /v1/unsubscribe/[redacted]?utm=x HTTP/1.1" {unsub.status_code}' in log
    assert f'"POST /v1/unsubscribe/[redacted] HTTP/1.1" {unsub_post.status_code}' in log
