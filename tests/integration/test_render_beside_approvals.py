"""Approvers are asked while the contract renders; the envelope waits for the documents.

The render is held (``HoldPoints``) inside the render activity, so each assertion below is made
while the documents are certainly not stored yet, then the hold is released.
"""

from __future__ import annotations

import httpx
from temporalio.client import Client

from dealflow.holds import HoldPoints
from dealflow.ids import deal_closure_workflow_id
from tests.utils.approvals import slack_messages, slack_request_for
from tests.utils.deals import FINANCE, REP, create_deal, record_history, wait_for_stage
from tests.utils.polling import eventually, hold_reached
from tests.utils.signature import envelope_of, envelopes_for


def _step(deal_id: str) -> str:
    return f"{deal_id}.v1.s0.finance_director"


async def test_the_approver_is_asked_and_decides_while_the_documents_render(
    http: httpx.AsyncClient, auth, settings, temporal_client: Client
):
    deal = await create_deal(http, auth(REP))  # the Finance Director's approval only
    holds = HoldPoints(settings.state_dir, enabled=True)
    holds.arm("render_documents", deal["id"])
    try:
        await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
        await slack_request_for(http, FINANCE, _step(deal["id"]))
        await hold_reached(holds, "render_documents", deal["id"])
        live = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()
        # Asked before any document is stored; the deal shows awaiting_approval once they are.
        assert live["stage"] == "quoting" and live["documents"] == [], live
        assert [a["status"] for a in live["approvals"]] == ["pending"]

        resp = await http.post(
            f"/v1/approvals/{_step(deal['id'])}/decision",
            json={"decision": "approve"},
            headers=auth(FINANCE),
        )
        assert resp.status_code == 200, resp.text

        async def approved() -> dict | None:
            now = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()
            return now if now["approvals"][0]["status"] == "approved" else None

        decided = await eventually(approved, what="the approval shown while the render is held")
        # Approved, but nothing goes for signature without its documents.
        assert decided["stage"] == "quoting" and decided["documents"] == [], decided
        assert await envelopes_for(http, deal["id"], 1) == []
    finally:
        holds.release("render_documents", deal["id"])

    signing = await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")
    stages = [t["event"] for t in signing["timeline"] if t["event"].startswith("stage.")]
    assert stages[-3:] == ["stage.quoting", "stage.awaiting_approval", "stage.awaiting_signature"]
    # The envelope carries the documents rendered for the version the approver approved.
    envelope = await envelope_of(http, deal["id"])
    rendered = {d["sha256"] for d in signing["documents"] if d["version"] == 1}
    assert rendered and {d["sha256"] for d in envelope["documents"]} >= rendered, envelope
    await record_history(
        temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"])),
        "deal_closure_asked_while_rendering",
    )


async def test_a_cancel_while_the_documents_render_withdraws_the_requests(
    http: httpx.AsyncClient, auth, settings, temporal_client: Client
):
    deal = await create_deal(http, auth(REP))
    holds = HoldPoints(settings.state_dir, enabled=True)
    holds.arm("render_documents", deal["id"])
    try:
        await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
        message = await slack_request_for(http, FINANCE, _step(deal["id"]))
        await hold_reached(holds, "render_documents", deal["id"])
        resp = await http.post(
            f"/v1/deals/{deal['id']}/cancel", json={"reason": "lost budget"}, headers=auth(REP)
        )
        assert resp.status_code in (200, 202), resp.text
        cancelled = await wait_for_stage(http, deal["id"], auth(REP), "cancelled")
    finally:
        holds.release("render_documents", deal["id"])
    assert [a["status"] for a in cancelled["approvals"]] == ["withdrawn"], cancelled["approvals"]

    async def withdrawn_in_slack() -> bool:
        found = [m for m in await slack_messages(http, FINANCE) if m["ts"] == message["ts"]]
        return "Withdrawn" in str(found[0]["blocks"])

    await eventually(withdrawn_in_slack, what="the Slack request marked withdrawn")
    assert await envelopes_for(http, deal["id"], 1) == []
    await record_history(
        temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"])),
        "deal_closure_cancelled_while_rendering",
    )


async def test_a_cancel_as_the_documents_are_done_still_withdraws_the_requests(
    http: httpx.AsyncClient, auth, settings
):
    # The race: the render has finished and awaiting_approval is being recorded (held there)
    # when the cancel arrives, before the closure waits on the chain. The chain must still be
    # withdrawn, not left to die with its closure.
    deal = await create_deal(http, auth(REP))
    holds = HoldPoints(settings.state_dir, enabled=True)
    point = ("record_stage", f"{deal['id']}/awaiting_approval")
    holds.arm(*point)
    try:
        await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
        await slack_request_for(http, FINANCE, _step(deal["id"]))
        await hold_reached(holds, *point)
        resp = await http.post(f"/v1/deals/{deal['id']}/cancel", headers=auth(REP))
        assert resp.status_code in (200, 202), resp.text
        cancelled = await wait_for_stage(http, deal["id"], auth(REP), "cancelled")
    finally:
        holds.release(*point)
    assert cancelled["documents"], cancelled  # rendered before the cancel
    assert [a["status"] for a in cancelled["approvals"]] == ["withdrawn"], cancelled["approvals"]
    stages = [t["event"] for t in cancelled["timeline"] if t["event"].startswith("stage.")]
    assert "stage.awaiting_approval" not in stages, stages
