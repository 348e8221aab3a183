"""The approval chain end to end: Slack clicks, signed links, timers, delegation, re-approval."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import httpx
from temporalio.client import Client

from api.closure import start_closure
from db import deals as deals_db
from db.models import Person
from dealflow.ids import approval_chain_workflow_id, approval_step_id, deal_closure_workflow_id
from dealflow.links import make_token
from dealflow.settings import Settings
from domain.schedule import add_business_hours
from tests.utils.approvals import (
    click,
    emailed_link,
    eventually,
    mails_to,
    path_of,
    slack_messages,
    slack_request_for,
)
from tests.utils.deals import (
    CFO,
    FINANCE,
    LEGAL,
    OPS,
    REP,
    SALES_VP,
    create_deal,
    record_history,
    wait_for_stage,
)

CONTROLLER = "tom.becker@dealflow.example"  # Finance Director's backup
SENIOR_COUNSEL = "luis.romero@dealflow.example"  # Legal's backup
INFOSEC = "raj.patel@dealflow.example"
CEO = "elena.petrova@dealflow.example"

# 600 x 450 = 270,000 (CFO >= 250,000; Finance >= 25,000), net 45 (Legal > 30 days).
BIG_DEAL = {
    "payment_terms_days": 45,
    "discount_pct": "0",
    "line_items": [
        {"sku": "PLAT-ENT", "description": "Platform", "quantity": "600", "unit_price": "450"}
    ],
}


def step(deal_id: str, stage: int, role: str, version: int = 1) -> str:
    return approval_step_id(deal_id, version, stage, role)


async def _approvals(http, deal_id, headers) -> dict[str, dict]:
    body = (await http.get(f"/v1/deals/{deal_id}", headers=headers)).json()
    return {a["role"]: a for a in body["approvals"]}


async def test_finance_legal_and_cfo_approve_by_slack_and_link_to_awaiting_signature(
    http: httpx.AsyncClient, auth, temporal_client: Client
):
    deal = await create_deal(http, auth(REP), **BIG_DEAL)
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    live = await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    assert {a["role"] for a in live["approvals"]} == {"finance_director", "legal", "cfo"}

    # Stage 0: Finance by a Slack button, Legal by the emailed signed link.
    finance = await slack_request_for(http, FINANCE, step(deal["id"], 0, "finance_director"))
    assert any("Why you" in str(b) for b in finance["blocks"])
    answer = await click(http, finance["ts"], "approve", FINANCE)
    assert answer["status_code"] == 200 and answer["within_slack_deadline"]
    assert answer["response"]["text"].startswith("Recorded: approved")

    link = await emailed_link(http, LEGAL, step(deal["id"], 0, "legal"))
    page = await http.get(path_of(link))
    assert page.status_code == 200 and "Payment terms of 45 days" in page.text
    done = await http.post(path_of(link), data={"decision": "approve", "comment": "fine"})
    assert done.status_code == 200 and "Approved" in done.text

    # Stage 1 opens only now: the CFO approves in Slack.
    cfo = await slack_request_for(http, CFO, step(deal["id"], 1, "cfo"))
    await click(http, cfo["ts"], "approve", CFO)
    final = await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")
    decided = {a["role"]: (a["status"], a["decided_by"]) for a in final["approvals"]}
    assert decided == {
        "finance_director": ("approved", FINANCE),
        "legal": ("approved", LEGAL),
        "cfo": ("approved", CFO),
    }

    # The Slack message now shows the outcome instead of buttons.
    updated = [m for m in await slack_messages(http, FINANCE) if m["ts"] == finance["ts"]][0]
    assert "Approved by sarah.okafor@dealflow.example" in str(updated["blocks"])

    # Every request, delivery and decision is in the audit trail, and the chain verifies.
    audit = (await http.get(f"/v1/deals/{deal['id']}/audit", headers=auth(REP))).json()
    assert audit["verification"]["ok"] is True
    events = [(e["event"], e["channel"]) for e in audit["events"]]
    assert events.count(("approval.requested", "workflow")) == 3
    assert ("approval.decided", "slack") in events and ("approval.decided", "link") in events
    assert sum(1 for e, _ in events if e == "approval.delivered") == 6  # Slack + email, x3
    assert (await http.get(f"/v1/deals/{deal['id']}/audit", headers=auth(OPS))).status_code == 200
    assert (await http.get(f"/v1/deals/{deal['id']}/audit", headers=auth(CFO))).status_code == 403
    await record_history(
        temporal_client.get_workflow_handle(approval_chain_workflow_id(deal["id"], 1)),
        "approval_chain_two_stages_approved",
    )
    await record_history(
        temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"])),
        "deal_closure_approved_to_awaiting_signature",
    )


async def test_only_the_holder_may_decide_and_the_first_decision_wins(http, auth):
    deal = await create_deal(http, auth(REP), **BIG_DEAL)
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    sid = step(deal["id"], 0, "finance_director")
    await slack_request_for(http, FINANCE, sid)
    url = f"/v1/approvals/{sid}/decision"

    stranger = await http.post(url, json={"decision": "approve"}, headers=auth(INFOSEC))
    assert stranger.status_code == 403 and stranger.json()["error"]["code"] == "forbidden"
    rep = await http.post(url, json={"decision": "approve"}, headers=auth(REP))
    assert rep.status_code == 403  # not an approver at all
    bad = await http.post(url, json={"decision": "maybe"}, headers=auth(FINANCE))
    assert bad.status_code == 422
    missing = await http.post(
        f"/v1/approvals/{deal['id']}.v1.s0.nobody/decision",
        json={"decision": "approve"},
        headers=auth(FINANCE),
    )
    assert missing.status_code == 404

    first = await http.post(url, json={"decision": "approve"}, headers=auth(FINANCE))
    assert first.status_code == 200 and first.json()["status"] == "approved"
    second = await http.post(url, json={"decision": "reject"}, headers=auth(FINANCE))
    assert second.status_code == 409
    assert second.json()["error"]["message"].startswith(f"already decided by {FINANCE}")


async def test_slack_button_and_link_racing_for_one_request_one_wins(http, auth):
    deal = await create_deal(http, auth(REP), **BIG_DEAL)
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    sid = step(deal["id"], 0, "legal")
    message = await slack_request_for(http, LEGAL, sid)
    link = await emailed_link(http, LEGAL, sid)
    slack_answer, link_answer = await asyncio.gather(
        click(http, message["ts"], "reject", LEGAL),
        http.post(path_of(link), json={"decision": "approve"}),
    )
    slack_won = slack_answer["response"]["text"].startswith("Recorded")
    link_won = link_answer.status_code == 200
    assert slack_won != link_won, (slack_answer, link_answer.text)
    if slack_won:
        assert link_answer.status_code == 409
        assert "already decided by" in link_answer.json()["error"]["message"]
    else:
        assert "already decided by" in slack_answer["response"]["text"]


async def test_forged_or_stale_slack_requests_and_bad_links_change_nothing(
    http, auth, settings: Settings
):
    deal = await create_deal(http, auth(REP), **BIG_DEAL)
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    sid = step(deal["id"], 0, "legal")
    await slack_request_for(http, LEGAL, sid)
    link = await emailed_link(http, LEGAL, sid)

    body = "payload=%7B%22type%22%3A%22block_actions%22%7D"
    forged = await http.post(
        "/v1/webhooks/slack/interactions",
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": str(int(time.time())),
            "X-Slack-Signature": "v0=" + "0" * 64,
        },
    )
    assert forged.status_code == 401
    from slack_sdk.signature import SignatureVerifier

    stale_ts = str(int(time.time()) - 600)
    signature = SignatureVerifier(settings.secret("slack_signing_secret")).generate_signature(
        timestamp=stale_ts, body=body
    )
    stale = await http.post(
        "/v1/webhooks/slack/interactions",
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": stale_ts,
            "X-Slack-Signature": signature,
        },
    )
    assert stale.status_code == 401

    token = link.rsplit("/", 1)[1]
    token_id, expires, sig = token.split(".")
    tampered = await http.get(f"/v1/approvals/links/{token_id}.{int(expires) + 1}.{sig}")
    assert tampered.status_code == 404
    expired_token = make_token(settings.secret("link_signing_key"), token_id, int(time.time()) - 1)
    expired = await http.post(f"/v1/approvals/links/{expired_token}", json={"decision": "approve"})
    assert expired.status_code == 403

    approvals = await _approvals(http, deal["id"], auth(REP))
    assert approvals["legal"]["status"] == "pending"

    assert (await http.post(path_of(link), json={"decision": "approve"})).status_code == 200
    reused = await http.post(path_of(link), json={"decision": "approve"})
    assert reused.status_code == 409
    assert (await http.get(path_of(link))).status_code == 409


async def test_request_changes_then_discount_change_reasks_sales_vp_and_cfo_but_keeps_legal(
    http, auth, temporal_client: Client
):
    deal = await create_deal(
        http,
        auth(REP),
        discount_pct="30",
        payment_terms_days=45,
        line_items=[
            {"sku": "PLAT", "description": "Platform", "quantity": "100", "unit_price": "450"}
        ],
    )
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    for role, who in (("finance_director", FINANCE), ("legal", LEGAL), ("sales_vp", SALES_VP)):
        await slack_request_for(http, who, step(deal["id"], 0, role))
    for role, who in (("finance_director", FINANCE), ("legal", LEGAL)):
        r = await http.post(
            f"/v1/approvals/{step(deal['id'], 0, role)}/decision",
            json={"decision": "approve"},
            headers=auth(who),
        )
        assert r.status_code == 200, r.text
    r = await http.post(
        f"/v1/approvals/{step(deal['id'], 0, 'sales_vp')}/decision",
        json={"decision": "request_changes", "comment": "30% is too deep; try 20%"},
        headers=auth(SALES_VP),
    )
    assert r.status_code == 200
    waiting = await wait_for_stage(http, deal["id"], auth(REP), "changes_requested")
    assert "30% is too deep" in waiting["stage_reason"]

    patched = await http.patch(
        f"/v1/deals/{deal['id']}", json={"discount_pct": "20"}, headers=auth(REP)
    )
    assert patched.status_code == 200, patched.text
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    await slack_request_for(http, SALES_VP, step(deal["id"], 0, "sales_vp", version=2))
    live = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()
    assert live["quote"]["version"] == 2
    assert {d["version"] for d in live["documents"]} == {2}
    approvals = {a["role"]: a for a in live["approvals"]}
    assert approvals["legal"]["status"] == "carried_over"
    assert approvals["legal"]["carried_from_version"] == 1
    assert approvals["sales_vp"]["status"] == "pending"
    assert approvals["sales_vp"]["step_id"].endswith(".v2.s0.sales_vp")
    events = [t["event"] for t in live["timeline"]]
    assert "approval.carried_over" in events and "approval.asked_again" in events
    await record_history(
        temporal_client.get_workflow_handle(approval_chain_workflow_id(deal["id"], 1)),
        "approval_chain_changes_requested",
    )
    await record_history(
        temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"])),
        "deal_closure_changes_requested_then_v2",
    )


async def _start_with_short_slas(temporal_client, settings, sessions, deal_id, seconds):
    short = settings.model_copy(update={"approval_sla_override_seconds": seconds})
    async with sessions() as s:
        row = await deals_db.get_deal(s, deal_id=deal_id)
        await start_closure(temporal_client, short, row)


async def test_reminder_then_escalation_to_backup_who_decides_while_the_original_is_refused(
    http, auth, temporal_client: Client, settings: Settings, sessions
):
    deal = await create_deal(http, auth(REP))  # 49,400: Finance Director only
    await _start_with_short_slas(temporal_client, settings, sessions, deal["id"], 4)
    sid = step(deal["id"], 0, "finance_director")
    await slack_request_for(http, FINANCE, sid, n=2)  # the request, then the reminder
    reminded = await _approvals(http, deal["id"], auth(REP))
    assert reminded["finance_director"]["reminded_at"] is not None

    escalated = await slack_request_for(http, CONTROLLER, sid)  # at the SLA: the backup
    approval = (await _approvals(http, deal["id"], auth(REP)))["finance_director"]
    assert approval["escalated_to"] == CONTROLLER and approval["escalation_level"] >= 1

    refused = await http.post(
        f"/v1/approvals/{sid}/decision", json={"decision": "approve"}, headers=auth(FINANCE)
    )
    assert refused.status_code == 403
    await click(http, escalated["ts"], "approve", CONTROLLER)
    final = await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")
    assert final["approvals"][0]["decided_by"] == CONTROLLER
    await record_history(
        temporal_client.get_workflow_handle(approval_chain_workflow_id(deal["id"], 1)),
        "approval_chain_reminded_and_escalated",
    )


async def test_second_level_escalation_goes_to_the_next_backup_or_manager(
    http, auth, temporal_client, settings, sessions
):
    # Sales VP (no backup) -> their manager, the CEO -> the CEO's backup, the CFO.
    deal = await create_deal(
        http,
        auth(REP),
        discount_pct="15",
        line_items=[{"sku": "S", "description": "Seats", "quantity": "10", "unit_price": "100"}],
    )
    await _start_with_short_slas(temporal_client, settings, sessions, deal["id"], 2)
    sid = step(deal["id"], 0, "sales_vp")
    await slack_request_for(http, CEO, sid)
    await slack_request_for(http, CFO, sid)

    async def level_two():
        a = (await _approvals(http, deal["id"], auth(REP)))["sales_vp"]
        return a if a["escalation_level"] == 2 else None

    approval = await eventually(level_two, what="second escalation")
    assert approval["holder_email"] == CFO
    r = await http.post(
        f"/v1/approvals/{sid}/decision", json={"decision": "approve"}, headers=auth(CFO)
    )
    assert r.status_code == 200


async def test_out_of_office_moves_pending_requests_to_the_delegate(http, auth, sessions):
    deal = await create_deal(http, auth(REP), **BIG_DEAL)
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    sid = step(deal["id"], 0, "legal")
    await slack_request_for(http, LEGAL, sid)

    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).isoformat()
    body = {"until": until, "delegate_email": SENIOR_COUNSEL}
    other = await http.put(f"/v1/approvers/{LEGAL}/out-of-office", json=body, headers=auth(FINANCE))
    assert other.status_code == 403
    try:
        resp = await http.put(
            f"/v1/approvers/{LEGAL}/out-of-office", json=body, headers=auth(LEGAL)
        )
        assert resp.status_code == 200, resp.text
        assert sid in resp.json()["moved_steps"]
        delegated = await slack_request_for(http, SENIOR_COUNSEL, sid)
        approval = (await _approvals(http, deal["id"], auth(REP)))["legal"]
        assert approval["delegate_email"] == SENIOR_COUNSEL
        await click(http, delegated["ts"], "approve", SENIOR_COUNSEL)

        async def decided():
            a = (await _approvals(http, deal["id"], auth(REP)))["legal"]
            return a if a["status"] == "approved" else None

        assert (await eventually(decided, what="delegate decision"))["decided_by"] == (
            SENIOR_COUNSEL
        )
    finally:
        # The org directory is shared by the whole session: put Hannah back in the office.
        async with sessions.begin() as s:
            person = await s.get(Person, LEGAL)
            person.ooo_until, person.ooo_delegate_email = None, None


async def test_out_of_office_skips_a_chain_ended_outside_dealflow(
    http, auth, sessions, temporal_client: Client
):
    """A chain terminated in the Temporal UI leaves its steps pending in the mirror; marking
    their approver out of office still answers 200 and moves only what a running chain holds."""
    ended = await create_deal(http, auth(REP), **BIG_DEAL)
    running = await create_deal(http, auth(REP), **BIG_DEAL)
    for deal in (ended, running):
        await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
        await slack_request_for(http, LEGAL, step(deal["id"], 0, "legal"))
    await temporal_client.get_workflow_handle(approval_chain_workflow_id(ended["id"], 1)).terminate(
        reason="ops, from the Temporal UI"
    )
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).isoformat()
    body = {"until": until, "delegate_email": SENIOR_COUNSEL}
    try:
        resp = await http.put(
            f"/v1/approvers/{LEGAL}/out-of-office", json=body, headers=auth(LEGAL)
        )
        assert resp.status_code == 200, resp.text
        moved = resp.json()["moved_steps"]
        assert step(running["id"], 0, "legal") in moved
        assert step(ended["id"], 0, "legal") not in moved
        await slack_request_for(http, SENIOR_COUNSEL, step(running["id"], 0, "legal"))
    finally:
        async with sessions.begin() as s:
            person = await s.get(Person, LEGAL)
            person.ooo_until, person.ooo_delegate_email = None, None


async def test_cancel_withdraws_pending_requests_updates_slack_and_kills_links(
    http, auth, temporal_client: Client
):
    deal = await create_deal(http, auth(REP), **BIG_DEAL)
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    sid = step(deal["id"], 0, "legal")
    message = await slack_request_for(http, LEGAL, sid)
    link = await emailed_link(http, LEGAL, sid)
    resp = await http.post(f"/v1/deals/{deal['id']}/cancel", headers=auth(REP))
    assert resp.status_code == 200 and resp.json()["stage"] == "cancelled"
    statuses = {a["role"]: a["status"] for a in resp.json()["approvals"]}
    assert statuses == {
        "finance_director": "withdrawn",
        "legal": "withdrawn",
        "cfo": "not_requested",  # stage 1 was never reached
    }
    updated = [m for m in await slack_messages(http, LEGAL) if m["ts"] == message["ts"]][0]
    assert "Withdrawn" in str(updated["blocks"])
    assert (await http.get(path_of(link))).status_code == 409
    await record_history(
        temporal_client.get_workflow_handle(approval_chain_workflow_id(deal["id"], 1)),
        "approval_chain_withdrawn",
    )
    await record_history(
        temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"])),
        "deal_closure_cancelled_during_approval",
    )


async def test_business_hour_sla_due_time_is_counted_in_the_approvers_time_zone(http, auth):
    deal = await create_deal(
        http,
        auth(REP),
        custom_terms=[{"kind": "security", "text": "SOC 2 Type II report shared annually."}],
    )
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await slack_request_for(http, INFOSEC, step(deal["id"], 0, "infosec"))
    approval = (await _approvals(http, deal["id"], auth(REP)))["infosec"]
    audit = (await http.get(f"/v1/deals/{deal['id']}/audit", headers=auth(REP))).json()
    requested = next(
        e
        for e in audit["events"]
        if e["event"] == "approval.requested" and e["detail"]["role"] == "infosec"
    )
    requested_at = dt.datetime.fromisoformat(requested["at"])
    # InfoSec: 24 business hours; Raj Patel works in America/Denver.
    expected = add_business_hours(requested_at, 24, "America/Denver")
    assert dt.datetime.fromisoformat(approval["due_at"]) == expected
    # Raj has no decision history, so the policy's expectation is shown.
    assert approval["expected_decision"] == {
        "median_hours": 10.0,
        "p90_hours": 10.0,
        "source": "policy",
    }


async def test_rep_is_warned_in_slack_when_approvals_will_finish_after_close_by(http, auth):
    # Whatever the approvers' history predicts, a close-by date already passed is missed.
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    deal = await create_deal(http, auth(REP), close_by=yesterday, **BIG_DEAL)
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))

    async def warned():
        return [
            m
            for m in await slack_messages(http, REP)
            if deal["name"] in (m["text"] or "") and "close-by" in m["text"]
        ]

    assert await eventually(warned, what="early warning to the rep")
    # The warning goes to Slack, not email (other tests' deals may mail the rep: look at this one).
    about_this_deal = [
        m for m in await mails_to(http, REP) if deal["name"] in (m.get("subject") or "")
    ]
    assert about_this_deal == []
