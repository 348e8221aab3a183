"""Signature tracking: a hint during a re-read is never lost; a failing DocuSign call parks.

The hint race is pinned down, not timed: the envelope_state activity is held (``HoldPoints``)
after it read the envelope, the completing Connect events are delivered meanwhile, then it is
released with its now-stale answer. With a poll interval of a day, only the hint can finish it.
"""

from __future__ import annotations

import asyncio

import pytest

from api.closure import start_closure
from db import deals as deals_db
from dealflow.holds import HoldPoints
from dealflow.ids import signature_workflow_id
from tests.utils.approvals import eventually, slack_request_for
from tests.utils.deals import FINANCE, OPS, REP, create_deal, record_history, wait_for_stage
from tests.utils.parking import failure_points, retry, wait_parked
from tests.utils.signature import COUNTERSIGNER, act, approved_deal, envelope_of, sign_all
from workflows.signature import SignatureWorkflow

SIGNER = "jordan.blake@acme-robotics.example"  # tests/utils/deals.py BASE_DEAL
DAY = 86400


async def _approved_with(http, auth, temporal_client, settings, sessions, **overrides) -> dict:
    """A deal approved by the Finance Director, its closure started with these settings."""
    deal = await create_deal(http, auth(REP))
    async with sessions() as s:
        row = await deals_db.get_deal(s, deal_id=deal["id"])
        await start_closure(temporal_client, settings.model_copy(update=overrides), row)
    sid = f"{deal['id']}.v1.s0.finance_director"
    await slack_request_for(http, FINANCE, sid)
    resp = await http.post(
        f"/v1/approvals/{sid}/decision", json={"decision": "approve"}, headers=auth(FINANCE)
    )
    assert resp.status_code == 200, resp.text
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")
    return deal


def _tracking(temporal_client, deal_id: str):
    return temporal_client.get_workflow_handle_for(
        SignatureWorkflow.run, signature_workflow_id(deal_id, 1)
    )


async def _status(temporal_client, deal_id: str):
    return await _tracking(temporal_client, deal_id).query(SignatureWorkflow.status)


async def _first_read(temporal_client, deal_id: str) -> None:
    async def read():
        try:
            return (await _status(temporal_client, deal_id)).reads >= 1
        except Exception:  # noqa: BLE001 - not started yet
            return False

    await eventually(read, what="the envelope's first read")


async def test_an_envelope_completed_hint_during_a_re_read_causes_another_re_read(
    http, auth, temporal_client, settings, sessions
):
    deal = await _approved_with(
        http,
        auth,
        temporal_client,
        settings,
        sessions,
        # Only a hint can finish this tracking: no poll, reminder or alert for a day.
        signature_timing_override=f"poll={DAY},remind={DAY},alert={DAY},expire={10 * DAY}",
        # The held read must not time out (a retried read would hide the bug).
        activity_timeout_seconds=120,
    )
    envelope = await envelope_of(http, deal["id"])
    eid = envelope["envelope_id"]
    await _first_read(temporal_client, deal["id"])
    holds = HoldPoints(settings.state_dir, enabled=True)
    holds.arm("envelope_state", eid)
    try:
        await act(http, eid, SIGNER, "view")  # a hint: the tracking re-reads, and is held

        async def held() -> bool:
            return holds.reached("envelope_state", eid)

        await eventually(held, what="the re-read held after reading the envelope")
        before = await _status(temporal_client, deal["id"])
        # Meanwhile everyone signs: the Connect events, envelope-completed last, arrive
        # (the sandbox delivers them before it answers).
        await act(http, eid, SIGNER, "sign")
        await act(http, eid, COUNTERSIGNER, "view")
        done = await act(http, eid, COUNTERSIGNER, "sign")
        assert done["envelope"]["status"] == "completed"
        events = [d["event"] for d in done["deliveries"]]
        assert "envelope-completed" in events
        assert {d["state"] for d in done["deliveries"]} == {"delivered"}
        during = await _status(temporal_client, deal["id"])
        assert during.events_received > before.events_received
        assert during.status != "completed"  # the held read has not answered yet
    finally:
        holds.release("envelope_state", eid)
    final = await wait_for_stage(http, deal["id"], auth(REP), "closed_won", timeout=90)
    assert final["signature"]["status"] == "completed"
    assert final["signature"]["polls"] == 0  # no timer fired: the hint did it
    assert final["signature"]["reads"] >= before.reads + 2  # the held read, then one more
    await record_history(_tracking(temporal_client, deal["id"]), "signature_hint_during_read")


@pytest.mark.parametrize("activity", ["send_envelope", "store_signed_documents"])
async def test_a_failing_send_or_store_parks_and_one_retry_resumes(http, auth, settings, activity):
    deal = await create_deal(http, auth(REP))
    points = failure_points(settings)
    points.arm(activity, deal["id"])
    try:
        await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
        sid = f"{deal['id']}.v1.s0.finance_director"
        await slack_request_for(http, FINANCE, sid)
        resp = await http.post(
            f"/v1/approvals/{sid}/decision", json={"decision": "approve"}, headers=auth(FINANCE)
        )
        assert resp.status_code == 200, resp.text
        if activity == "store_signed_documents":
            await sign_all(http, await envelope_of(http, deal["id"]))
        parked = await wait_parked(http, deal["id"], auth(REP), activity)
        assert "InjectedFailure" in parked["stage_reason"]
    finally:
        points.clear(activity, deal["id"])
    await retry(http, deal["id"], auth(OPS))
    if activity == "send_envelope":
        await sign_all(http, await envelope_of(http, deal["id"]))
    final = await wait_for_stage(http, deal["id"], auth(REP), "closed_won", timeout=90)
    assert final["signature"]["status"] == "completed"


async def test_a_failing_envelope_read_parks_and_one_retry_resumes(
    http, auth, settings, temporal_client
):
    deal = await approved_deal(http, auth)
    eid = (await envelope_of(http, deal["id"]))["envelope_id"]
    await _first_read(temporal_client, deal["id"])
    points = failure_points(settings)
    points.arm("envelope_state", eid)
    try:
        await act(http, eid, SIGNER, "view")  # a hint: the next read fails
        await wait_parked(http, deal["id"], auth(REP), "envelope_state")
    finally:
        points.clear("envelope_state", eid)
    await retry(http, deal["id"], auth(OPS))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")
    await sign_all(http, await envelope_of(http, deal["id"]))
    await wait_for_stage(http, deal["id"], auth(REP), "closed_won", timeout=90)
    await record_history(_tracking(temporal_client, deal["id"]), "signature_parked_then_retried")


async def test_a_failing_reminder_parks_and_one_retry_resumes(
    http, auth, settings, temporal_client, sessions
):
    deal = await create_deal(http, auth(REP))
    points = failure_points(settings)
    points.arm("resend_envelope", deal["id"])
    try:
        async with sessions() as s:
            row = await deals_db.get_deal(s, deal_id=deal["id"])
            await start_closure(
                temporal_client,
                settings.model_copy(
                    update={"signature_timing_override": "poll=1,remind=1,alert=3600,expire=3600"}
                ),
                row,
            )
        sid = f"{deal['id']}.v1.s0.finance_director"
        await slack_request_for(http, FINANCE, sid)
        resp = await http.post(
            f"/v1/approvals/{sid}/decision", json={"decision": "approve"}, headers=auth(FINANCE)
        )
        assert resp.status_code == 200, resp.text
        await wait_parked(http, deal["id"], auth(REP), "resend_envelope")
    finally:
        points.clear("resend_envelope", deal["id"])
    await retry(http, deal["id"], auth(OPS))
    eid = (await envelope_of(http, deal["id"]))["envelope_id"]

    async def resent():
        view = (await http.get(f"/_sandbox/docusign/envelopes/{eid}")).json()
        return min(view["recipients"], key=lambda r: r["routing_order"]).get("resends")

    assert await eventually(resent, what="the reminder sent after the retry")
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")


async def test_a_failing_void_parks_the_cancel_until_the_retry(http, auth, settings):
    deal = await approved_deal(http, auth)
    envelope = await envelope_of(http, deal["id"])
    points = failure_points(settings)
    points.arm("void_envelope", deal["id"])
    try:
        cancel = asyncio.ensure_future(
            http.post(f"/v1/deals/{deal['id']}/cancel", headers=auth(REP))
        )
        await wait_parked(http, deal["id"], auth(REP), "void_envelope")
    finally:
        points.clear("void_envelope", deal["id"])
    await retry(http, deal["id"], auth(OPS))
    resp = await cancel
    assert resp.status_code == 200 and resp.json()["stage"] == "cancelled"
    view = (await http.get(f"/_sandbox/docusign/envelopes/{envelope['envelope_id']}")).json()
    assert view["status"] == "voided"


async def test_a_failing_decline_notice_parks_and_one_retry_resumes(http, auth, settings):
    deal = await approved_deal(http, auth)
    eid = (await envelope_of(http, deal["id"]))["envelope_id"]
    points = failure_points(settings)
    points.arm("notify", deal["id"])
    try:
        await act(http, eid, SIGNER, "view")
        await act(http, eid, SIGNER, "decline", reason="Need net 45")
        await wait_parked(http, deal["id"], auth(REP), "notify")
    finally:
        points.clear("notify", deal["id"])
    await retry(http, deal["id"], auth(OPS))
    declined = await wait_for_stage(http, deal["id"], auth(REP), "declined")
    assert "Need net 45" in declined["stage_reason"]
