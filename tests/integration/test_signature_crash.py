"""Crash tests for signature and closed-won: one envelope, one customer and invoice, one note."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from api.closure import start_closure
from db import deals as deals_db
from db.closing_models import ClosingStep
from tests.utils.deals import REP, create_deal, wait_for_stage
from tests.utils.signature import envelope_of, envelopes_for, sign_all
from tests.utils.workers import start_worker, stop, wait_exit

SMALL = {  # 2 x 99: no approval rule fires, so the closure goes straight to signature
    "discount_pct": "0",
    "line_items": [
        {"sku": "STARTER", "description": "Starter", "quantity": "2", "unit_price": "99"}
    ],
}


@pytest.mark.parametrize(
    "crash_at",
    ["send_envelope.after_create", "closing.after_customer", "closing.after_crm"],
)
async def test_worker_killed_mid_signature_or_closing_does_every_side_effect_once(
    http, auth, temporal_client, settings, sessions, crash_at
):
    deal = await create_deal(http, auth(REP), external_id=f"crash-{uuid.uuid4().hex[:6]}", **SMALL)
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    async with sessions() as s:
        await start_closure(
            temporal_client,
            settings.model_copy(update={"task_queue": queue}),
            await deals_db.get_deal(s, deal_id=deal["id"]),
        )
    doomed = start_worker(settings, queue, crash_at=crash_at)
    try:
        if crash_at.startswith("closing"):
            envelope = await envelope_of(http, deal["id"])
            await sign_all(http, envelope)
        assert await wait_exit(doomed) == 86
    finally:
        stop(doomed)
    survivor = start_worker(settings, queue)
    try:
        if crash_at.startswith("send_envelope"):
            envelope = await envelope_of(http, deal["id"])
            await sign_all(http, envelope)
        final = await wait_for_stage(http, deal["id"], auth(REP), "closed_won", timeout=90)
    finally:
        stop(survivor)

    assert len(await envelopes_for(http, deal["id"])) == 1
    async with sessions() as s:
        steps = (
            await s.scalars(select(ClosingStep.step).where(ClosingStep.deal_id == deal["id"]))
        ).all()
    assert len(steps) == len(set(steps))  # each saga step recorded once
    assert {"stripe.customer", "crm.note"} <= set(steps)
    crm = (await http.get(f"/_sandbox/crm/deals/{deal['id']}")).json()
    assert len(crm["notes"]) == 1
    assert final["billing"]["stripe_customer_id"].startswith("cus_")
