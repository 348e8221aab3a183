"""Every failure ends somewhere a person can act: the deal closure parks, ops retry it.

A permanent failure injected into each of the closure's activities (``FailurePoints``, keyed by
the deal) parks the closure in ``needs_attention`` with the reason, visible through the API and
the ``DealStage`` search attribute; after the cause is cleared, one retry through the API runs
the failed step again and the closure carries on.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from api.closure import start_closure
from db import deals as deals_db
from db.models import Deal
from dealflow.ids import deal_closure_workflow_id
from tests.integration.test_closing_activities import invoice_paid_event, signed
from tests.utils.deals import FINANCE, OPS, REP, create_deal, record_history, wait_for_stage
from tests.utils.parking import (
    SHORT_BUDGET,
    failure_points,
    retry,
    search_attribute_stage,
    wait_parked,
)
from tests.utils.polling import eventually
from tests.utils.signature import approved_deal, envelope_of, sign_all

SMALL = {  # 2 x 99: no approval rule fires, so the closure goes straight to signature
    "discount_pct": "0",
    "line_items": [
        {"sku": "STARTER", "description": "Starter", "quantity": "2", "unit_price": "99"}
    ],
}


@pytest.mark.parametrize(
    "activity", ["load_deal", "price_quote", "render_documents", "plan_approvals", "record_stage"]
)
async def test_a_permanent_failure_in_a_quoting_activity_parks_and_one_retry_resumes(
    http, auth, settings, temporal_client, activity
):
    deal = await create_deal(http, auth(REP))
    points = failure_points(settings)
    points.arm(activity, deal["id"])
    try:
        await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
        parked = await wait_parked(http, deal["id"], auth(REP), activity)
        assert "InjectedFailure" in parked["stage_reason"]
        assert "step.failed" in [t["event"] for t in parked["timeline"]]
        await search_attribute_stage(temporal_client, deal["id"], "needs_attention")
    finally:
        points.clear(activity, deal["id"])
    answer = await retry(http, deal["id"], auth(OPS))
    assert answer["step"] == activity
    resumed = await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    assert resumed["stage_reason"] is None
    assert resumed["quote"]["version"] == 1
    assert "step.retried" in [t["event"] for t in resumed["timeline"]]
    await search_attribute_stage(temporal_client, deal["id"], "awaiting_approval")
    if activity == "price_quote":
        await record_history(
            temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"])),
            "deal_closure_parked_then_retried",
        )


@pytest.mark.parametrize(
    "activity",
    ["mark_crm_closed_won", "create_stripe_billing", "record_revenue_and_commission"],
)
async def test_a_permanent_failure_in_a_closing_step_parks_and_one_retry_closes_won(
    http, auth, settings, sessions, temporal_client, activity
):
    deal = await approved_deal(http, auth)
    points = failure_points(settings)
    points.arm(activity, deal["id"])
    try:
        await sign_all(http, await envelope_of(http, deal["id"]))
        parked = await wait_parked(http, deal["id"], auth(REP), activity)
        assert parked["stage_reason"].startswith("Closing failed")
        async with sessions() as s:  # the deal row mirrors the park
            row = await s.scalar(select(Deal).where(Deal.id == deal["id"]))
            assert row.stage == "needs_attention"
    finally:
        points.clear(activity, deal["id"])
    await retry(http, deal["id"], auth(OPS))
    final = await wait_for_stage(http, deal["id"], auth(REP), "closed_won", timeout=90)
    assert final["billing"]["stripe_invoice_id"].startswith("in_")
    assert final["crm"]["status"] == "closed_won"
    if activity == "create_stripe_billing":
        await record_history(
            temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"])),
            "deal_closure_closing_parked_then_retried",
        )


async def test_a_transient_failure_is_retried_within_its_budget_then_parks(
    http, auth, settings, temporal_client, sessions
):
    deal = await create_deal(http, auth(REP))
    points = failure_points(settings)
    points.arm("price_quote", deal["id"], mode="transient")
    try:
        async with sessions() as s:
            row = await deals_db.get_deal(s, deal_id=deal["id"])
            await start_closure(temporal_client, settings, row, retry=SHORT_BUDGET)
        parked = await wait_parked(http, deal["id"], auth(REP), "price_quote")
        assert "InjectedTransientError" in parked["stage_reason"]
    finally:
        points.clear("price_quote", deal["id"])
    # The deal's owner may retry too.
    await retry(http, deal["id"], auth(REP))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")


async def test_retry_is_refused_when_nothing_is_parked_and_for_other_people(http, auth):
    deal = await create_deal(http, auth(REP))
    draft = await http.post(f"/v1/deals/{deal['id']}/retry", headers=auth(OPS))
    assert draft.status_code == 409 and draft.json()["error"]["code"] == "not_parked"
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    running = await http.post(f"/v1/deals/{deal['id']}/retry", headers=auth(OPS))
    assert running.status_code == 409
    stranger = await http.post(f"/v1/deals/{deal['id']}/retry", headers=auth(FINANCE))
    assert stranger.status_code == 403


async def test_the_old_closing_retry_route_resumes_any_park(http, auth, settings):
    deal = await create_deal(http, auth(REP), **SMALL)
    points = failure_points(settings)
    points.arm("render_documents", deal["id"])
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await wait_parked(http, deal["id"], auth(REP), "render_documents")
    points.clear("render_documents", deal["id"])
    resp = await http.post(f"/v1/deals/{deal['id']}/closing/retry", headers=auth(OPS))
    assert resp.status_code == 202

    async def documents():
        live = await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")
        return live if live["documents"] else None

    await eventually(documents, what="documents rendered after the retry")


async def test_retry_from_the_temporal_ui_is_the_retry_signal(
    http, auth, settings, temporal_client
):
    deal = await create_deal(http, auth(REP))
    points = failure_points(settings)
    points.arm("plan_approvals", deal["id"])
    started = await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await wait_parked(http, deal["id"], auth(REP), "plan_approvals")
    points.clear("plan_approvals", deal["id"])
    # What the Temporal UI's "Send a signal" does: signal `retry` with the operator's email.
    await temporal_client.get_workflow_handle(started.json()["workflow_id"]).signal("retry", OPS)
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")


async def _won_with(http, auth, temporal_client, settings, sessions, **overrides) -> dict:
    """A small deal (no approvals), started with these settings, signed: closed_won."""
    deal = await create_deal(http, auth(REP), **SMALL)
    async with sessions() as s:
        row = await deals_db.get_deal(s, deal_id=deal["id"])
        await start_closure(temporal_client, settings.model_copy(update=overrides), row)
    await sign_all(http, await envelope_of(http, deal["id"]))
    return await wait_for_stage(http, deal["id"], auth(REP), "closed_won", timeout=90)


async def test_a_failing_payment_record_parks_after_closed_won_and_one_retry_records_it(
    http, auth, settings, temporal_client, sessions
):
    won = await _won_with(http, auth, temporal_client, settings, sessions)
    points = failure_points(settings)
    points.arm("record_payment", won["id"])
    try:
        invoice = won["billing"]["stripe_invoice_id"]
        body, headers = signed(
            invoice_paid_event(invoice), settings.secret("stripe_webhook_secret")
        )
        resp = await http.post("/v1/webhooks/stripe", content=body, headers=headers)
        assert resp.status_code == 200, resp.text
        await wait_parked(http, won["id"], auth(REP), "record_payment")
        # Won is won: a parked payment record cannot be cancelled into "cancelled".
        refused = await http.post(f"/v1/deals/{won['id']}/cancel", headers=auth(REP))
        assert refused.status_code == 409
    finally:
        points.clear("record_payment", won["id"])
    await retry(http, won["id"], auth(OPS))

    async def paid():
        live = await wait_for_stage(http, won["id"], auth(REP), "closed_won")
        return live if live["billing"]["status"] == "paid" else None

    await eventually(paid, what="the payment recorded after the retry")


async def test_a_failing_overdue_notice_parks_and_one_retry_sends_it(
    http, auth, settings, temporal_client, sessions
):
    deal = await create_deal(http, auth(REP), **{**SMALL, "payment_terms_days": 0})
    points = failure_points(settings)
    points.arm("notify", deal["id"])
    try:
        async with sessions() as s:
            row = await deals_db.get_deal(s, deal_id=deal["id"])
            # Due today, plus a 2 s grace: the overdue notice comes right after closed_won.
            short = settings.model_copy(update={"payment_grace_days": 2 / 86400})
            await start_closure(temporal_client, short, row)
        await sign_all(http, await envelope_of(http, deal["id"]))
        await wait_parked(http, deal["id"], auth(REP), "notify")
    finally:
        points.clear("notify", deal["id"])
    await retry(http, deal["id"], auth(OPS))

    async def overdue():
        live = await wait_for_stage(http, deal["id"], auth(REP), "closed_won")
        return live if live["billing"]["status"] == "overdue" else None

    await eventually(overdue, what="the overdue notice sent after the retry")
