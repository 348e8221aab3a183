"""Crash tests for the approval chain: no duplicate Slack posts or emails, timers still fire."""

from __future__ import annotations

import json
import signal
import uuid
from collections import Counter

from api.closure import start_closure
from db import deals as deals_db
from dealflow.ids import approval_chain_workflow_id
from tests.utils.approvals import eventually, mails_to, slack_request_for
from tests.utils.deals import FINANCE, REP, create_deal, wait_for_stage
from tests.utils.workers import start_worker, stop, wait_exit

CONTROLLER = "tom.becker@dealflow.example"
SLACK_IDS = {FINANCE: "U01FIN0001", CONTROLLER: "U01FIN0002"}  # config/org.toml


async def _start(http, auth, temporal_client, settings, sessions, sla_seconds: float):
    deal = await create_deal(http, auth(REP))  # Finance Director only
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    short = settings.model_copy(
        update={"task_queue": queue, "approval_sla_override_seconds": sla_seconds}
    )
    async with sessions() as s:
        await start_closure(temporal_client, short, await deals_db.get_deal(s, deal_id=deal["id"]))
    return deal, queue, f"{deal['id']}.v1.s0.finance_director"


async def _posts(http, email: str, step_id: str) -> Counter:
    """Every chat.postMessage the Slack sandbox received about ``step_id`` for ``email``,
    counted by headline (request, reminder, escalation): the record of what was posted, even
    after the message was later updated to show the outcome."""
    calls = (await http.get("/_sandbox/slack/calls", params={"method": "chat.postMessage"})).json()
    slack_id = SLACK_IDS[email]
    out: Counter = Counter()
    for call in calls["calls"]:
        blocks = call["args"].get("blocks")
        if call["args"].get("channel") == slack_id and step_id in str(blocks):
            if isinstance(blocks, str):
                blocks = json.loads(blocks)
            out[blocks[0]["text"]["text"].split(" — ")[0]] += 1
    return out


async def _waiting_on_a_timer(temporal_client, deal_id: str) -> None:
    """Until the chain's history shows a timer started after the request was delivered."""
    handle = temporal_client.get_workflow_handle(approval_chain_workflow_id(deal_id, 1))

    async def timer_started():
        kinds = [e.WhichOneof("attributes") async for e in handle.fetch_history_events()]
        return "timer_started_event_attributes" in kinds

    await eventually(timer_started, what="the chain waiting on its reminder timer")


async def _decide_as_holder(http, auth, deal_id: str, sid: str) -> str:
    """Approve as whoever holds the step now (escalation may have moved it on meanwhile)."""
    for _ in range(5):
        body = (await http.get(f"/v1/deals/{deal_id}", headers=auth(REP))).json()
        holder = next(a for a in body["approvals"] if a["step_id"] == sid)["holder_email"]
        r = await http.post(
            f"/v1/approvals/{sid}/decision", json={"decision": "approve"}, headers=auth(holder)
        )
        if r.status_code == 200:
            return holder
        assert r.status_code == 403, r.text  # it moved between our read and our decision
    raise AssertionError("could not catch the holder")


def _each_once(counts: Counter) -> None:
    assert counts and all(n == 1 for n in counts.values()), counts


async def _assert_mail_unique(http, email: str) -> None:
    ids = [m["message_id"] for m in await mails_to(http, email)]
    assert len(ids) == len(set(ids)), ids


async def test_worker_killed_while_waiting_on_a_timer_the_reminder_still_fires_once(
    http, auth, temporal_client, settings, sessions
):
    # SLA 20 s: reminder at 10 s, escalation at 20 s, both after the restart.
    deal, queue, sid = await _start(http, auth, temporal_client, settings, sessions, 20)
    first = start_worker(settings, queue)
    try:
        await slack_request_for(http, FINANCE, sid)
        await _waiting_on_a_timer(temporal_client, deal["id"])
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        stop(first)
    second = start_worker(settings, queue)
    try:
        await slack_request_for(http, FINANCE, sid, n=2)  # the reminder, from the new worker
        await slack_request_for(http, CONTROLLER, sid)  # and the escalation at the SLA
        await _decide_as_holder(http, auth, deal["id"], sid)
        await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")
    finally:
        stop(second)
    finance = await _posts(http, FINANCE, sid)
    _each_once(finance)
    assert {"Approval needed", "Reminder: your approval is still needed"} <= set(finance)
    controller = await _posts(http, CONTROLLER, sid)
    _each_once(controller)
    assert "Escalated to you: approval overdue" in controller
    await _assert_mail_unique(http, FINANCE)
    await _assert_mail_unique(http, CONTROLLER)


async def test_worker_dies_right_after_delivering_an_escalation_which_is_not_sent_twice(
    http, auth, temporal_client, settings, sessions
):
    deal, queue, sid = await _start(http, auth, temporal_client, settings, sessions, 3)
    doomed = start_worker(settings, queue, crash_at="deliver.after_send.escalation")
    assert await wait_exit(doomed) == 86
    survivor = start_worker(settings, queue)
    try:

        async def escalated():
            a = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()
            return a["live"] and a["approvals"][0]["escalation_level"] >= 1

        await eventually(escalated, what="the chain running again after the crash")
        await _decide_as_holder(http, auth, deal["id"], sid)
        await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")
    finally:
        stop(survivor)
    controller = await _posts(http, CONTROLLER, sid)
    assert controller == Counter({"Escalated to you: approval overdue": 1})
    escalation_mails = [m for m in await mails_to(http, CONTROLLER) if sid in (m.get("text") or "")]
    assert len(escalation_mails) == 1
    await _assert_mail_unique(http, FINANCE)


async def _audit_events(http, auth, deal_id: str) -> list[dict]:
    resp = await http.get(f"/v1/deals/{deal_id}/audit", headers=auth(REP))
    assert resp.status_code == 200, resp.text
    return resp.json()["events"]


async def _request_mails(http, sid: str) -> list[dict]:
    return [m for m in await mails_to(http, FINANCE) if sid in (m.get("text") or "")]


async def test_worker_dies_after_the_slack_post_before_its_row_says_sent_no_second_post(
    http, auth, temporal_client, settings, sessions
):
    # SLA of an hour: no reminder or escalation during the test, only the request.
    deal, queue, sid = await _start(http, auth, temporal_client, settings, sessions, 3600)
    doomed = start_worker(settings, queue, crash_at="deliver.after_slack_post")
    assert await wait_exit(doomed) == 86  # Slack has the post; the row still says sending
    survivor = start_worker(settings, queue)
    try:
        # The retried delivery ran to its end: the chain then waits on its reminder timer.
        await _waiting_on_a_timer(temporal_client, deal["id"])
        await eventually(lambda: _request_mails(http, sid), what="the request email")
    finally:
        stop(survivor)
    assert await _posts(http, FINANCE, sid) == Counter({"Approval needed": 1})
    assert len(await _request_mails(http, sid)) == 1  # the email had not left: sent once
    events = await _audit_events(http, auth, deal["id"])
    unconfirmed = [e for e in events if e["event"] == "approval.delivery_unconfirmed"]
    assert [(e["channel"], e["detail"]["purpose"]) for e in unconfirmed] == [("slack", "request")]
    delivered = [e["channel"] for e in events if e["event"] == "approval.delivered"]
    assert delivered == ["email"]


async def test_worker_dies_after_handing_the_email_over_before_its_row_says_sent_no_second_mail(
    http, auth, temporal_client, settings, sessions
):
    deal, queue, sid = await _start(http, auth, temporal_client, settings, sessions, 3600)
    doomed = start_worker(settings, queue, crash_at="deliver.after_email_data")
    assert await wait_exit(doomed) == 86  # the SMTP server has the message; the row says sending
    survivor = start_worker(settings, queue)
    try:
        await _waiting_on_a_timer(temporal_client, deal["id"])
    finally:
        stop(survivor)
    assert await _posts(http, FINANCE, sid) == Counter({"Approval needed": 1})
    mails = await _request_mails(http, sid)
    assert len(mails) == 1, [m["message_id"] for m in mails]
    events = await _audit_events(http, auth, deal["id"])
    unconfirmed = [e for e in events if e["event"] == "approval.delivery_unconfirmed"]
    assert [(e["channel"], e["detail"]["purpose"]) for e in unconfirmed] == [("email", "request")]
