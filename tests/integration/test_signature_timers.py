"""Signature and billing timers with short configured durations; invoice.paid from Stripe."""

from __future__ import annotations

import uuid

from api.closure import start_closure
from db import deals as deals_db
from tests.integration.test_closing_activities import invoice_paid_event, signed
from tests.utils.approvals import eventually, slack_messages
from tests.utils.deals import FINANCE, REP, create_deal, wait_for_stage
from tests.utils.signature import envelope_of, envelopes_for, sign_all

SMALL = {  # 2 x 99: no approval rule fires, so the closure goes straight to signature
    "discount_pct": "0",
    "line_items": [
        {"sku": "STARTER", "description": "Starter", "quantity": "2", "unit_price": "99"}
    ],
}


async def _start(http, auth, temporal_client, settings, sessions, **overrides):
    deal = await create_deal(http, auth(REP), **{**SMALL, **overrides.pop("deal", {})})
    async with sessions() as s:
        await start_closure(
            temporal_client,
            settings.model_copy(update=overrides),
            await deals_db.get_deal(s, deal_id=deal["id"]),
        )
    return deal


async def _dm_to(http, email: str, *needles: str) -> list[dict]:
    return [
        m for m in await slack_messages(http, email) if all(n in (m["text"] or "") for n in needles)
    ]


async def test_reminders_go_to_unsigned_signers_and_the_rep_hears_nobody_opened_it(
    http, auth, temporal_client, settings, sessions
):
    deal = await _start(
        http,
        auth,
        temporal_client,
        settings,
        sessions,
        signature_timing_override="poll=1,remind=2,alert=2,expire=3600",
    )
    envelope = await envelope_of(http, deal["id"])

    async def reminded():
        view = (await http.get(f"/_sandbox/docusign/envelopes/{envelope['envelope_id']}")).json()
        first = min(view["recipients"], key=lambda r: r["routing_order"])
        return first.get("resends")

    assert await eventually(reminded, what="a resend to the first signer")
    assert await eventually(
        lambda: _dm_to(http, REP, "Nobody has opened", deal["name"]), what="not-opened alert"
    )
    # The countersigner's turn has not come: never reminded.
    view = (await http.get(f"/_sandbox/docusign/envelopes/{envelope['envelope_id']}")).json()
    last = max(view["recipients"], key=lambda r: r["routing_order"])
    assert not last.get("resends")


async def test_an_envelope_not_signed_in_time_expires_and_is_voided(
    http, auth, temporal_client, settings, sessions
):
    deal = await _start(
        http,
        auth,
        temporal_client,
        settings,
        sessions,
        signature_timing_override="poll=1,remind=3600,alert=3600,expire=3",
    )
    waiting = await wait_for_stage(http, deal["id"], auth(REP), "needs_attention")
    assert "expired" in waiting["stage_reason"]
    assert (await envelopes_for(http, deal["id"]))[0]["status"] == "voided"


async def test_unpaid_past_due_alerts_rep_and_finance_then_invoice_paid_marks_it_paid(
    http, auth, temporal_client, settings, sessions
):
    deal = await _start(
        http,
        auth,
        temporal_client,
        settings,
        sessions,
        payment_grace_days=2 / 86400,  # due today (net 0) + 2 s
        deal={"payment_terms_days": 0, "external_id": f"pay-{uuid.uuid4().hex[:6]}"},
    )
    await sign_all(http, await envelope_of(http, deal["id"]))
    closed = await wait_for_stage(http, deal["id"], auth(REP), "closed_won")
    invoice_id = closed["billing"]["stripe_invoice_id"]
    for who in (REP, FINANCE):
        assert await eventually(
            lambda who=who: _dm_to(http, who, "unpaid", deal["id"]), what=f"overdue DM to {who}"
        )

    body, headers = signed(invoice_paid_event(invoice_id), settings.secret("stripe_webhook_secret"))
    resp = await http.post("/v1/webhooks/stripe", content=body, headers=headers)
    assert resp.status_code == 200 and resp.json()["matched"] is True

    async def paid():
        billing = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()["billing"]
        return billing if billing["status"] == "paid" else None

    billing = await eventually(paid, what="billing paid")
    assert billing["paid_at"]
    audit = (await http.get(f"/v1/deals/{deal['id']}/audit", headers=auth(REP))).json()
    assert "billing.paid" in [e["event"] for e in audit["events"]]


async def test_forged_stripe_webhook_is_400(http):
    body = b'{"type": "invoice.paid", "data": {"object": {"id": "in_x"}}}'
    resp = await http.post(
        "/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": "t=1,v1=deadbeef"}
    )
    assert resp.status_code == 400
