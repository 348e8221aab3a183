"""A closing failure no retry can fix parks the deal; ops fix it and retry; nothing is redone."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from api.closure import start_closure
from db import deals as deals_db
from db.closing_models import ClosingStep
from tests.utils.deals import OPS, REP, create_deal, wait_for_stage
from tests.utils.signature import envelope_of, sign_all
from tests.utils.workers import start_worker, stop

SMALL = {
    "discount_pct": "0",
    "line_items": [
        {"sku": "STARTER", "description": "Starter", "quantity": "2", "unit_price": "99"}
    ],
}


async def test_stripe_refusal_needs_attention_then_ops_retry_closes_won_without_redoing(
    http, auth, temporal_client, settings, sessions
):
    deal = await create_deal(http, auth(REP), **SMALL)
    queue = f"retry-{uuid.uuid4().hex[:8]}"
    async with sessions() as s:
        await start_closure(
            temporal_client,
            settings.model_copy(update={"task_queue": queue}),
            await deals_db.get_deal(s, deal_id=deal["id"]),
        )
    # A worker configured with a key Stripe refuses (a real misconfiguration, answered 401).
    misconfigured = start_worker(settings, queue, DEALFLOW_STRIPE_API_KEY="sk_test_not_a_key")
    try:
        await sign_all(http, await envelope_of(http, deal["id"]))
        parked = await wait_for_stage(http, deal["id"], auth(REP), "needs_attention", timeout=90)
    finally:
        stop(misconfigured)
    assert parked["stage_reason"].startswith("Closing failed")
    assert parked["crm"]["status"] == "closed_won"  # the step before Stripe is done

    fixed = start_worker(settings, queue)
    try:
        resp = await http.post(f"/v1/deals/{deal['id']}/closing/retry", headers=auth(OPS))
        assert resp.status_code == 202
        final = await wait_for_stage(http, deal["id"], auth(REP), "closed_won", timeout=90)
    finally:
        stop(fixed)
    assert final["billing"]["stripe_invoice_id"].startswith("in_")
    assert "closing.retry" in [t["event"] for t in final["timeline"]]
    crm = (await http.get(f"/_sandbox/crm/deals/{deal['id']}")).json()
    assert len(crm["notes"]) == 1
    async with sessions() as s:
        steps = (
            await s.scalars(select(ClosingStep.step).where(ClosingStep.deal_id == deal["id"]))
        ).all()
    assert len(steps) == len(set(steps))
