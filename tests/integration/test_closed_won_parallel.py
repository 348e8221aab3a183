"""Closed-won runs the CRM beside Stripe billing: pinned by holding the CRM call."""

from __future__ import annotations

from dealflow.holds import HoldPoints
from tests.utils.deals import REP, wait_for_stage
from tests.utils.polling import eventually
from tests.utils.signature import approved_deal, envelope_of, sign_all


async def test_stripe_billing_and_revenue_complete_while_the_crm_call_is_held(http, auth, settings):
    deal = await approved_deal(http, auth, external_id="crm-parallel-2027")
    envelope = await envelope_of(http, deal["id"])
    holds = HoldPoints(settings.state_dir, enabled=True)
    holds.arm("mark_crm_closed_won", deal["id"])
    try:
        await sign_all(http, envelope)

        async def crm_held() -> bool:
            return holds.reached("mark_crm_closed_won", deal["id"])

        await eventually(crm_held, what="the held CRM call")

        async def booked() -> dict | None:
            body = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()
            events = [t["event"] for t in body["timeline"]]
            return body if "revenue.recorded" in events else None

        during = await eventually(booked, what="billing and revenue while the CRM call is held")
        assert during["stage"] == "closing"
        assert during["crm"] is None  # still held
        assert during["billing"]["stripe_invoice_id"].startswith("in_")
        holds.release("mark_crm_closed_won", deal["id"])
        final = await wait_for_stage(http, deal["id"], auth(REP), "closed_won")
    finally:
        holds.release("mark_crm_closed_won", deal["id"])
    assert final["crm"]["status"] == "closed_won"
    assert final["billing"]["stripe_invoice_id"] == during["billing"]["stripe_invoice_id"]
    crm = (await http.get("/_sandbox/crm/deals/" + deal["id"])).json()
    assert crm["deal"]["properties"]["dealstage"] == "closedwon"
    assert len(crm["notes"]) == 1
