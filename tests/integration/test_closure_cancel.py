"""Cancel works in every stage that has not ended (awaiting_approval and awaiting_signature are
in test_approval_chain.py and test_signature.py): no hang, no 409 while the closure still runs."""

from __future__ import annotations

from sqlalchemy import select

from db.models import Deal
from dealflow.ids import deal_closure_workflow_id
from tests.utils.deals import FINANCE, OPS, REP, create_deal, record_history, wait_for_stage
from tests.utils.parking import failure_points, wait_parked
from tests.utils.polling import eventually
from tests.utils.signature import act, approved_deal, envelope_of, sign_all

SIGNER = "jordan.blake@acme-robotics.example"


async def _cancel(http, auth, deal_id: str, who: str = REP) -> dict:
    resp = await http.post(
        f"/v1/deals/{deal_id}/cancel", json={"reason": "customer went dark"}, headers=auth(who)
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["stage"] == "cancelled"
    again = await http.post(f"/v1/deals/{deal_id}/cancel", headers=auth(REP))
    assert again.status_code == 409
    return body


async def test_cancel_a_draft_marks_the_deal_cancelled_and_it_cannot_start(http, auth, sessions):
    deal = await create_deal(http, auth(REP))
    await _cancel(http, auth, deal["id"])
    start = await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    assert start.status_code == 409 and start.json()["error"]["code"] == "closure_ended"
    async with sessions() as s:
        assert (await s.scalar(select(Deal.stage).where(Deal.id == deal["id"]))) == "cancelled"
    audit = (await http.get(f"/v1/deals/{deal['id']}/audit", headers=auth(REP))).json()
    assert "deal.cancelled" in [e["event"] for e in audit["events"]]


async def test_cancel_while_quoting_retries_an_activity(http, auth, settings):
    deal = await create_deal(http, auth(REP))
    points = failure_points(settings)
    # Transient, with the default budget: the closure sits in quoting, retrying, for minutes.
    points.arm("price_quote", deal["id"], mode="transient")
    try:
        await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))

        async def quoting_with_a_load():
            live = await wait_for_stage(http, deal["id"], auth(REP), "quoting")
            return live if "stage.quoting" in [t["event"] for t in live["timeline"]] else None

        await eventually(quoting_with_a_load, what="the closure quoting")
        await _cancel(http, auth, deal["id"], who=OPS)
    finally:
        points.clear("price_quote", deal["id"])


async def test_cancel_while_waiting_for_the_rep_to_fix_the_deal(http, auth):
    deal = await create_deal(http, auth(REP), signers=[], account={"region": None})
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await wait_for_stage(http, deal["id"], auth(REP), "needs_attention")
    await _cancel(http, auth, deal["id"])


async def test_cancel_while_parked_on_a_failed_step(http, auth, settings, temporal_client):
    deal = await create_deal(http, auth(REP))
    points = failure_points(settings)
    points.arm("render_documents", deal["id"])
    try:
        await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
        await wait_parked(http, deal["id"], auth(REP), "render_documents")
        await _cancel(http, auth, deal["id"])
    finally:
        points.clear("render_documents", deal["id"])
    await record_history(
        temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"])),
        "deal_closure_cancelled_while_parked",
    )


async def test_cancel_after_changes_were_requested(http, auth):
    deal = await create_deal(http, auth(REP))
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    sid = f"{deal['id']}.v1.s0.finance_director"

    async def decided():
        r = await http.post(
            f"/v1/approvals/{sid}/decision",
            json={"decision": "request_changes", "comment": "net 30 please"},
            headers=auth(FINANCE),
        )
        return r.status_code == 200

    await eventually(decided, what="changes requested")
    await wait_for_stage(http, deal["id"], auth(REP), "changes_requested")
    await _cancel(http, auth, deal["id"])


async def test_cancel_after_a_decline(http, auth, temporal_client):
    deal = await approved_deal(http, auth)
    eid = (await envelope_of(http, deal["id"]))["envelope_id"]
    await act(http, eid, SIGNER, "view")
    await act(http, eid, SIGNER, "decline", reason="Need net 45")
    await wait_for_stage(http, deal["id"], auth(REP), "declined")
    await _cancel(http, auth, deal["id"])
    await record_history(
        temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"])),
        "deal_closure_cancelled_after_decline",
    )


async def test_cancel_while_closing_waits_in_needs_attention(http, auth, settings):
    deal = await approved_deal(http, auth)
    points = failure_points(settings)
    points.arm("mark_crm_closed_won", deal["id"])
    try:
        await sign_all(http, await envelope_of(http, deal["id"]))
        await wait_parked(http, deal["id"], auth(REP), "mark_crm_closed_won")
        await _cancel(http, auth, deal["id"], who=OPS)
    finally:
        points.clear("mark_crm_closed_won", deal["id"])


async def test_cancel_while_closing_retries_a_step(http, auth, settings):
    deal = await approved_deal(http, auth)
    points = failure_points(settings)
    points.arm("mark_crm_closed_won", deal["id"], mode="transient")
    try:
        await sign_all(http, await envelope_of(http, deal["id"]))
        await wait_for_stage(http, deal["id"], auth(REP), "closing")
        await _cancel(http, auth, deal["id"], who=OPS)
    finally:
        points.clear("mark_crm_closed_won", deal["id"])
