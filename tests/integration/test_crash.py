"""Crash tests: the worker process dies mid-flight and a fresh one finishes the closure.

The worker is a real ``python worker.py`` process. ``DEALFLOW_CRASH_AT`` makes it exit abruptly
right after an activity's side effect and before Temporal hears the activity finished — the
moment where a careless retry would write a second quote or a second set of documents.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from api.closure import start_closure
from db import deals as deals_db
from db.models import AuditEvent, Document, QuoteVersion
from tests.utils.deals import REP, create_deal
from tests.utils.polling import eventually
from tests.utils.workers import start_worker, stop, wait_exit
from workflows.deal_closure import DealClosureWorkflow


@pytest.mark.parametrize("crash_at", ["price_quote.after_store", "render_documents.after_store"])
async def test_worker_killed_mid_closure_finishes_with_one_quote_and_one_document_set(
    http, auth, temporal_client, settings, sessions, crash_at
):
    deal = await create_deal(
        http,
        auth(REP),
        account={"country": "FR", "region": None, "tax_id": "FR40303265045"},
    )
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    crash_settings = settings.model_copy(update={"task_queue": queue})
    async with sessions() as s:
        row = await deals_db.get_deal(s, deal_id=deal["id"])
        handle, started = await start_closure(temporal_client, crash_settings, row)
    assert started

    doomed = start_worker(settings, queue, crash_at=crash_at)
    assert await wait_exit(doomed) == 86  # died at the checkpoint, after the side effect

    survivor = start_worker(settings, queue)
    try:

        async def awaiting_approval():
            status = await handle.query(DealClosureWorkflow.status)
            return status if status.stage == "awaiting_approval" else None

        status = await eventually(awaiting_approval, timeout=90, what="the closure finishing")
    finally:
        stop(survivor)

    async with sessions() as s:
        quotes = await s.scalar(
            select(func.count()).select_from(QuoteVersion).where(QuoteVersion.deal_id == deal["id"])
        )
        docs = (
            await s.execute(
                select(Document.kind, Document.version).where(Document.deal_id == deal["id"])
            )
        ).all()
        stage_events = (
            await s.scalars(
                select(AuditEvent.event)
                .where(AuditEvent.deal_id == deal["id"], AuditEvent.event.like("stage.%"))
                .order_by(AuditEvent.id)
            )
        ).all()
    assert quotes == 1
    assert sorted(docs) == sorted((d.kind, 1) for d in status.documents)
    assert {kind for kind, _ in docs} == {"order_form", "dpa"}
    assert stage_events == ["stage.quoting", "stage.awaiting_approval"]
    for doc in status.documents:
        assert (settings.document_dir / deal["id"] / "v1" / f"{doc.kind}.pdf").is_file()
