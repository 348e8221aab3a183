"""The handoff after closed-won, end to end through the API on the real servers.

The session's settings run the plan in seconds (``handoff_timing_override`` in conftest: a
business day is 1 s, reminders 0.5 s before due, renewal alerts 2 s apart), so reminders,
escalations and the three renewal alerts happen inside one test; the month-long dates are
unit-tested in tests/unit/test_handoff_rules.py.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import httpx
from icalendar import Calendar

from dealflow.ids import deal_closure_workflow_id, handoff_workflow_id, kickoff_message_id
from tests.utils.deals import (
    FINANCE,
    OPS,
    OTHER_REP,
    REP,
    SALES_VP,
    create_deal,
    record_history,
)
from tests.utils.deals import wait_for_stage as wait_deal
from tests.utils.polling import eventually
from tests.utils.signature import act, approved_deal, envelope_of, sign_all

CSM = "ben.carter@dealflow.example"  # mid-market specialty (config/org.toml)
OTHER_CSM = "olivia.grant@dealflow.example"
CS_LEAD = "jasmine.lee@dealflow.example"
CS_MANAGER = CS_LEAD  # Ben's manager
ADMIN = "alex.morgan@dealflow.example"
SIGNER = "jordan.blake@acme-robotics.example"
PRIMARY = {"name": "Riley Chen", "email": "riley.chen@acme-robotics.example", "role": "primary"}
DETAILS = {"contacts": [PRIMARY], "success_goals": ["Cut quote turnaround to one day"]}
# The end-to-end test's own primary contact: no other handoff of the session mails them.
E2E_PRIMARY = {**PRIMARY, "email": "riley.e2e@acme-robotics.example"}


async def _won(http: httpx.AsyncClient, auth, **overrides) -> dict:
    deal = await approved_deal(http, auth, **overrides)
    await sign_all(http, await envelope_of(http, deal["id"]))
    await wait_deal(http, deal["id"], auth(REP), "handoff", timeout=90)
    return deal


async def _handoff(http, deal_id: str, who: dict, pred, what: str, timeout: float = 60) -> dict:
    async def probe():
        r = await http.get(f"/v1/handoffs/{deal_id}", headers=who)
        if r.status_code != 200:
            return None
        body = r.json()
        return body if pred(body) else None

    return await eventually(probe, timeout=timeout, what=what)


async def _mail(http, to: str) -> list[dict]:
    r = await http.get("/_sandbox/mail/messages", params={"to": to})
    assert r.status_code == 200, r.text
    return r.json()["messages"]


async def test_a_won_deal_is_handed_over_with_csm_invite_plan_and_renewal(
    http, auth, temporal_client
):
    deal = await approved_deal(http, auth)
    # Supplied before the win: the handoff then never waits for them.
    details = {**DETAILS, "contacts": [E2E_PRIMARY]}
    patched = await http.patch(f"/v1/handoffs/{deal['id']}", json=details, headers=auth(REP))
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"] is None  # stored; there is no handoff yet
    await sign_all(http, await envelope_of(http, deal["id"]))
    await wait_deal(http, deal["id"], auth(REP), "handoff", timeout=90)

    body = await _handoff(
        http, deal["id"], auth(REP), lambda b: b["status"] == "onboarding", "onboarding"
    )
    # CSM by specialty (mid-market: 220 employees) with the reason and the runners-up.
    assert body["csm"]["email"] == CSM
    assert "mid-market" in body["csm"]["reason"]
    assert [a["email"] for a in body["csm"]["alternatives"]] == [OTHER_CSM]
    assert "no matching specialty" in body["csm"]["alternatives"][0]["reason"]
    # The package.
    pkg = body["package"]
    assert pkg["customer"]["name"] == "Acme Robotics Inc."
    assert pkg["customer"]["segment"] == "mid-market"
    roles = {c["email"]: c["role"] for c in pkg["contacts"]}
    assert roles == {SIGNER: "signer", E2E_PRIMARY["email"]: "primary"}
    assert [p["sku"] for p in pkg["products"]] == ["PLAT-ENT", "ONB-STD"]
    assert pkg["term"]["months"] == 12
    assert {d["kind"] for d in pkg["documents"]} >= {"signed_contract", "certificate"}
    assert all(len(d["sha256"]) == 64 for d in pkg["documents"])
    assert pkg["billing"]["total"] and pkg["billing"]["currency"] == "USD"
    assert pkg["billing"]["stripe_invoice_id"].startswith("in_")
    assert pkg["risks"] == []  # 5 % discount, no custom terms, signed at once
    assert body["missing"] == []

    # The invite: one message per attendee, a real iCalendar REQUEST, parsed back.
    kickoff = body["kickoff"]
    assert set(kickoff["attendees"]) == {SIGNER, E2E_PRIMARY["email"], CSM, REP}
    invites = await _mail(http, E2E_PRIMARY["email"])
    invite = next(m for m in invites if m["message_id"] == kickoff_message_id(deal["id"]))
    cal = Calendar.from_ical(invite["calendar"])
    assert str(cal["method"]) == "REQUEST"
    (event,) = cal.walk("VEVENT")
    start = event.decoded("dtstart")
    assert start.isoformat().replace("+00:00", "Z") == kickoff["at"].replace("+00:00", "Z")
    # New York (the account is in NY): 10:00 local on a business day after the close.
    local = start.astimezone(ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (10, 0) and local.weekday() < 5
    attendees = {str(a).removeprefix("mailto:") for a in event.get("attendee")}
    assert attendees == {SIGNER, E2E_PRIMARY["email"], CSM, REP}
    for who in (SIGNER, CSM, REP):
        got = [m for m in await _mail(http, who) if m["message_id"] == invite["message_id"]]
        assert len(got) == 1, who
    # The package to the CSM, finance and support, each once.
    for to, subject in (
        (CSM, "Handoff: Acme Robotics Inc. is yours"),
        ("finance-ops@dealflow.example", "New customer for billing: Acme Robotics Inc."),
        ("support@dealflow.example", "New customer for support: Acme Robotics Inc."),
    ):
        got = [
            m
            for m in await _mail(http, to)
            if m["subject"] == subject and deal["id"] in (m["text"] or "")
        ]
        assert len(got) == 1, to
    csm_mail = next(
        m
        for m in await _mail(http, CSM)
        if m["subject"].startswith("Handoff:") and deal["id"] in m["text"]
    )
    assert "Cut quote turnaround to one day" in csm_mail["text"]

    # The win post, once.
    wins = (await http.get("/_sandbox/slack/messages", params={"channel": "wins"})).json()
    posts = [m for m in wins["messages"] if deal["id"] in m["text"]]
    assert len(posts) == 1 and "Acme Robotics Inc. signed" in posts[0]["text"]

    by_key = {i["key"]: i for i in body["items"]}
    assert set(by_key) == {"kickoff_prep", "admin_setup", "first_value_review"}
    assert by_key["admin_setup"]["owner_email"] == E2E_PRIMARY["email"]
    prep = by_key["kickoff_prep"]
    assert prep["owner_email"] == CSM
    # Done by its owner; a second time is 409.
    done = await http.post(f"/v1/handoffs/{deal['id']}/items/{prep['id']}/done", headers=auth(CSM))
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "done" and done.json()["done_by"] == CSM
    again = await http.post(f"/v1/handoffs/{deal['id']}/items/{prep['id']}/done", headers=auth(CSM))
    assert again.status_code == 409 and again.json()["error"]["code"] == "task_closed"
    # Someone else's item: 403.
    review = by_key["first_value_review"]
    other = await http.post(
        f"/v1/handoffs/{deal['id']}/items/{review['id']}/done", headers=auth(OTHER_REP)
    )
    assert other.status_code == 403
    # The CSM's open items are in their task list; done from there, the workflow is told.
    tasks = (await http.get("/v1/tasks", headers=auth(CSM))).json()["items"]
    assert review["id"] in {t["id"] for t in tasks if t["kind"] == "onboarding_item"}
    via_tasks = await http.post(f"/v1/tasks/{review['id']}/done", headers=auth(CSM))
    assert via_tasks.status_code == 200, via_tasks.text
    assert via_tasks.json()["workflow"]["told"] is True

    # The customer's item is never done: reminded before due, then escalated to the CSM.
    def customer_item_escalated(b):
        item = next(i for i in b["items"] if i["key"] == "admin_setup")
        return item["escalated_to"] == CSM and item["reminded_at"] and item["status"] == "overdue"

    await _handoff(http, deal["id"], auth(CSM), customer_item_escalated, "escalation", 30)
    reminders = [m for m in await _mail(http, E2E_PRIMARY["email"]) if "Reminder" in m["subject"]]
    assert len(reminders) == 1
    overdue = [
        m
        for m in await _mail(http, CSM)
        if m["subject"].startswith("Overdue:") and deal["id"] in m["text"]
    ]
    assert len(overdue) == 1

    # The renewal alerts (2 s apart here), to the CSM and the rep, and the CRM renewal.
    final = await _handoff(
        http,
        deal["id"],
        auth(OPS),
        lambda b: all(a["sent_at"] for a in b["renewal"]["alerts"]),
        "every renewal alert sent",
        60,
    )
    renewal = final["renewal"]
    assert [a["days_before"] for a in renewal["alerts"]] == [90, 60, 30]
    assert renewal["crm_renewal_id"]
    crm = (await http.get(f"/_sandbox/crm/deals/{deal['id']}-renewal")).json()
    assert crm["deal"]["properties"]["dealname"] == "Renewal: Acme Robotics Inc."
    for who in (CSM, REP):
        alerts = [
            m["subject"].split(":")[0]
            for m in await _mail(http, who)
            if m["subject"].startswith("Renewal in") and deal["id"] in m["text"]
        ]
        assert alerts == ["Renewal in 90 days", "Renewal in 60 days", "Renewal in 30 days"]
    assert final["status"] == "onboarding"  # the customer's item is still open
    # Each alert is also a task for the CSM and the rep.
    for who in (CSM, REP):
        tasks = await http.get("/v1/tasks", params={"kind": "renewal_alert"}, headers=auth(who))
        mine = [t for t in tasks.json()["items"] if t["deal_id"] == deal["id"]]
        assert len(mine) == 3, who
    # Continued as new (the history stays small): the status says which run this is.
    handle = temporal_client.get_workflow_handle(handoff_workflow_id(deal["id"]))
    desc = await handle.describe()
    assert desc.run_id != desc.raw_description.workflow_execution_info.first_run_id
    await record_history(handle, "handoff_renewal_alerts_last_run")
    first = temporal_client.get_workflow_handle(
        handoff_workflow_id(deal["id"]),
        run_id=desc.raw_description.workflow_execution_info.first_run_id,
    )
    await record_history(first, "handoff_won_to_onboarding")
    await record_history(
        temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"])),
        "deal_closure_won_to_handoff",
    )
    # The deal carries the handoff's summary.
    read = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()
    assert read["stage"] == "handoff"
    assert read["handoff"]["csm_email"] == CSM and read["handoff"]["kickoff_at"]
    assert read["handoff"]["renewal_at"].startswith(renewal["term_end"])

    # One learning event for the won deal, visible to the Sales VP; a rep may not read them.
    events = await http.get("/v1/learning/events", params={"kind": "won"}, headers=auth(SALES_VP))
    assert events.status_code == 200, events.text
    (won,) = [e for e in events.json()["items"] if e["deal_id"] == deal["id"]]
    assert won["total"] and won["approval_hours"] is not None and won["signature_hours"]
    assert (await http.get("/v1/learning/events", headers=auth(REP))).status_code == 403


async def test_a_missing_field_waits_in_needs_attention_until_patch(http, auth):
    deal = await _won(http, auth)
    body = await _handoff(
        http, deal["id"], auth(REP), lambda b: b["status"] == "needs_attention", "waiting"
    )
    assert {m["field"] for m in body["missing"]} == {"primary_contact", "success_goals"}
    assert body["kickoff"] is None and body["csm"] is None
    # Access: the owner, the CS lead, ops and admin read; another rep may not, nor patch.
    for who in (CS_LEAD, OPS, ADMIN):
        assert (await http.get(f"/v1/handoffs/{deal['id']}", headers=auth(who))).status_code == 200
    assert (
        await http.get(f"/v1/handoffs/{deal['id']}", headers=auth(OTHER_REP))
    ).status_code == 403
    assert (
        await http.patch(f"/v1/handoffs/{deal['id']}", json=DETAILS, headers=auth(OTHER_REP))
    ).status_code == 403
    bad = await http.patch(
        f"/v1/handoffs/{deal['id']}", json={"timezone": "Mars/Olympus"}, headers=auth(REP)
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"]
    # Half of it: still waiting, naming only what is left.
    await http.patch(f"/v1/handoffs/{deal['id']}", json={"contacts": [PRIMARY]}, headers=auth(REP))
    body = await _handoff(
        http,
        deal["id"],
        auth(REP),
        lambda b: [m["field"] for m in b["missing"]] == ["success_goals"],
        "only success goals missing",
    )
    assert body["status"] == "needs_attention"
    await http.patch(
        f"/v1/handoffs/{deal['id']}", json={"success_goals": ["Go live"]}, headers=auth(REP)
    )
    body = await _handoff(
        http, deal["id"], auth(REP), lambda b: b["status"] == "onboarding", "resumed"
    )
    assert body["csm"]["email"] == CSM and body["missing"] == []
    # The assigned CSM may now read it, and mark every item done (the customer's too): live.
    assert (await http.get(f"/v1/handoffs/{deal['id']}", headers=auth(CSM))).status_code == 200
    for item in body["items"]:
        r = await http.post(f"/v1/handoffs/{deal['id']}/items/{item['id']}/done", headers=auth(CSM))
        assert r.status_code == 200, r.text
    live = await _handoff(http, deal["id"], auth(CSM), lambda b: b["status"] == "live", "live")
    assert {i["status"] for i in live["items"]} == {"done"}
    # The deal's handoff summary is the mirror the workflow writes after its status changes.

    async def deal_says_live():
        read = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()
        return (read.get("handoff") or {}).get("status") == "live"

    assert await eventually(deal_says_live, what="the deal's handoff summary saying live")


async def test_no_csm_fits_the_lead_gets_a_task_and_reassign_resumes(http, auth):
    # A small Japanese mining company: no CSM has smb, apac or mining.
    deal = await create_deal(
        http,
        auth(REP),
        account={"country": "JP", "region": None, "employees": 20, "industry": "Mining"},
        line_items=[
            {"sku": "PLAT", "description": "Platform", "quantity": "5", "unit_price": "90"}
        ],
        currency="JPY",
    )
    await http.patch(f"/v1/handoffs/{deal['id']}", json=DETAILS, headers=auth(REP))
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    deal_now = await wait_deal(http, deal["id"], auth(REP), "awaiting_signature", timeout=60)
    assert deal_now["stage"] == "awaiting_signature"
    await sign_all(http, await envelope_of(http, deal["id"]))
    await wait_deal(http, deal["id"], auth(REP), "handoff", timeout=90)
    body = await _handoff(
        http, deal["id"], auth(CS_LEAD), lambda b: b["status"] == "needs_attention", "no CSM"
    )
    assert body["missing"][0]["field"] == "csm"
    tasks = (await http.get("/v1/tasks", headers=auth(CS_LEAD))).json()["items"]
    (task,) = [t for t in tasks if t["deal_id"] == deal["id"]]
    assert task["kind"] == "csm_assignment"
    # Only the lead (or admin) reassigns; the target must be a CSM.
    reassign = f"/v1/handoffs/{deal['id']}/reassign"
    body_in = {"csm_email": OTHER_CSM, "reason": "Olivia covers APAC this quarter"}
    assert (await http.post(reassign, json=body_in, headers=auth(REP))).status_code == 403
    not_csm = {"csm_email": REP, "reason": "x"}
    assert (await http.post(reassign, json=not_csm, headers=auth(CS_LEAD))).status_code == 422
    r = await http.post(reassign, json=body_in, headers=auth(CS_LEAD))
    assert r.status_code == 200, r.text
    body = await _handoff(
        http, deal["id"], auth(OTHER_CSM), lambda b: b["status"] == "onboarding", "resumed"
    )
    assert body["csm"]["email"] == OTHER_CSM and "Olivia covers APAC" in body["csm"]["reason"]
    tasks = (await http.get("/v1/tasks", headers=auth(CS_LEAD))).json()["items"]
    assert deal["id"] not in {t["deal_id"] for t in tasks}  # the lead's task closed with it
    # Reassigning again moves the open items of the old CSM to the new one.
    r = await http.post(
        reassign, json={"csm_email": CSM, "reason": "Ben has room"}, headers=auth(ADMIN)
    )
    assert r.status_code == 200, r.text
    moved = r.json()
    assert moved["csm"]["email"] == CSM
    assert all(i["owner_email"] != OTHER_CSM for i in moved["items"])
    ben = (await http.get("/v1/tasks", headers=auth(CSM))).json()["items"]
    assert any(t["deal_id"] == deal["id"] and t["kind"] == "onboarding_item" for t in ben)


async def test_lost_deals_in_every_open_stage_and_never_once_won(http, auth):
    reason = {"reason": "Budget went to a competitor", "competitor": "Initech"}
    # A draft: set directly.
    draft = await create_deal(http, auth(REP))
    assert (
        await http.post(f"/v1/deals/{draft['id']}/lost", json=reason, headers=auth(OTHER_REP))
    ).status_code == 403
    r = await http.post(f"/v1/deals/{draft['id']}/lost", json=reason, headers=auth(REP))
    assert r.status_code == 200, r.text
    assert r.json()["stage"] == "closed_lost" and r.json()["withdrawn"] is False
    again = await http.post(f"/v1/deals/{draft['id']}/lost", json=reason, headers=auth(REP))
    assert again.status_code == 409
    assert (
        await http.post(f"/v1/deals/{draft['id']}/lost", json={}, headers=auth(REP))
    ).status_code == 422
    # Awaiting approval: the chain is withdrawn; awaiting signature: the envelope.
    pending = await create_deal(http, auth(REP))
    await http.post(f"/v1/deals/{pending['id']}/ready-to-close", headers=auth(REP))
    await wait_deal(http, pending["id"], auth(REP), "awaiting_approval")
    signing = await approved_deal(http, auth)
    # Needs attention (no signers), changes requested, declined by the customer.
    attention = await create_deal(http, auth(REP), signers=[])
    await http.post(f"/v1/deals/{attention['id']}/ready-to-close", headers=auth(REP))
    await wait_deal(http, attention["id"], auth(REP), "needs_attention")
    changes = await create_deal(http, auth(REP))
    await http.post(f"/v1/deals/{changes['id']}/ready-to-close", headers=auth(REP))
    await wait_deal(http, changes["id"], auth(REP), "awaiting_approval")

    async def asked_for_changes():
        r = await http.post(
            f"/v1/approvals/{changes['id']}.v1.s0.finance_director/decision",
            json={"decision": "request_changes", "comment": "Shorter term"},
            headers=auth(FINANCE),
        )
        return r.status_code == 200

    await eventually(asked_for_changes, what="changes requested")
    await wait_deal(http, changes["id"], auth(REP), "changes_requested")
    declined = await approved_deal(http, auth)
    envelope = await envelope_of(http, declined["id"])
    await act(http, envelope["envelope_id"], SIGNER, "view")
    await act(http, envelope["envelope_id"], SIGNER, "decline", reason="Went elsewhere")
    await wait_deal(http, declined["id"], auth(REP), "declined")
    for deal in (pending, signing, attention, changes, declined):
        r = await http.post(f"/v1/deals/{deal['id']}/lost", json=reason, headers=auth(REP))
        assert r.status_code == 200, r.text
        assert r.json()["withdrawn"] is True
        final = await wait_deal(http, deal["id"], auth(REP), "closed_lost")
        assert final["stage"] == "closed_lost"
    envelope = await envelope_of(http, signing["id"])
    assert envelope["status"] == "voided"
    events = (
        await http.get("/v1/learning/events", params={"kind": "lost"}, headers=auth(OPS))
    ).json()["items"]
    mine = {e["deal_id"]: e for e in events}
    for deal in (draft, pending, signing, attention, changes, declined):
        assert mine[deal["id"]]["reason"] == reason["reason"]
        assert mine[deal["id"]]["competitor"] == "Initech"
    # A won deal cannot be lost.
    won = await _won(http, auth)
    r = await http.post(f"/v1/deals/{won['id']}/lost", json=reason, headers=auth(REP))
    assert r.status_code == 409 and r.json()["error"]["code"] == "deal_won"
