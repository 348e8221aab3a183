"""The FastAPI application: thin — authenticate, validate, translate to a workflow call, return.

uvicorn api.app:create_app --factory --port 8000
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.body_limit import BodyLimitMiddleware
from api.errors import install_error_handlers
from api.openapi import install_openapi
from api.routes import (
    approvals,
    campaigns,
    contact_deals,
    deals,
    documents,
    handoffs,
    learning,
    lists,
    mail_webhooks,
    ops,
    sandbox,
    signature,
    stripe_webhook,
    tasks,
)
from api.unavailable import install_unavailable_handlers
from db.engine import make_engine, make_sessionmaker
from db.org import OrgDirectory, load_org
from dealflow.logging import configure_logging
from dealflow.settings import Settings
from dealflow.temporal import connect_for_api

log = logging.getLogger("dealflow.api")


async def seed_org(app: FastAPI) -> None:
    """Sandbox profile: load the org directory and its dev-only API keys (idempotent)."""
    settings: Settings = app.state.settings
    async with app.state.sessions.begin() as session:
        await load_org(
            session,
            org=OrgDirectory.load(settings.org_directory_path),
            api_keys=settings.sandbox_file.get("api_keys", []),
        )


def create_app(
    settings: Settings | None = None,
    *,
    engine: AsyncEngine | None = None,
    temporal: Client | None = None,
) -> FastAPI:
    """Build the app; tests inject the engine and Temporal client, production builds its own."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()
        own_engine = engine is None
        app.state.engine = engine or make_engine(settings.require_database_url())
        app.state.sessions = make_sessionmaker(app.state.engine)
        # Lazy: the API starts (and /readyz says why it is not ready) even while Temporal is down.
        app.state.temporal = temporal or await connect_for_api(settings, lazy=True)
        app.state.sandbox_http = httpx.AsyncClient(timeout=10)
        if settings.is_sandbox:
            await seed_org(app)
        log.info("api ready profile=%s temporal=%s", settings.profile, settings.temporal_address)
        try:
            yield
        finally:
            await app.state.sandbox_http.aclose()
            if own_engine:
                await app.state.engine.dispose()

    app = FastAPI(
        title="dealflow",
        version="0.1.0",
        summary="Durable orchestration for the work around a sale.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_unavailable_handlers(app)
    app.add_middleware(BodyLimitMiddleware)  # added before the metrics: they count its 413s
    ops.install_metrics(app)
    app.include_router(ops.router)
    app.include_router(deals.router)
    app.include_router(documents.router)
    app.include_router(approvals.router)
    app.include_router(signature.router)
    app.include_router(campaigns.router)
    app.include_router(campaigns.suppressions_router)
    app.include_router(mail_webhooks.router)
    app.include_router(stripe_webhook.router)
    app.include_router(lists.router)  # GET /v1/deals, /v1/approvals, /v1/campaigns
    app.include_router(tasks.router)
    app.include_router(contact_deals.router)
    app.include_router(handoffs.router)  # /v1/handoffs/{deal}
    app.include_router(handoffs.lost_router)  # POST /v1/deals/{id}/lost
    app.include_router(learning.router)
    if settings.is_sandbox:
        app.include_router(sandbox.router)
    # Last: the document is built from every route included above.
    install_openapi(app)
    return app
