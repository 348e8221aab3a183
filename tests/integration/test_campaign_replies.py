"""What replies, delivery events and unsubscribes do to sequences (routing, end to end)."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from zoneinfo import ZoneInfo

import holidays
from sqlalchemy import select

from db.campaign_models import CampaignContact, CampaignSend, Suppression
from dealflow.ids import sequence_workflow_id
from tests.utils.campaigns import (
    campaign_payload,
    contact,
    create_and_launch,
    email_step,
    header,
    mail_to,
    poll,
    post_signed,
    reply,
    seasoned_sender,
    unique,
)
from tests.utils.deals import REP, record_history

# Step 2 waits one "day" of 30 s: long enough to act on step 1 before it is due.
WAITING = {"wait_day_seconds": 30, "reply_window_seconds": 0}
TWO_STEPS = [email_step(), email_step(subject=None, body="Following up.", wait_days=1)]


async def _launch(http, auth, contacts, steps=TWO_STEPS, test_mode=WAITING, **extra):
    payload = campaign_payload(contacts, steps=steps, test_mode=test_mode, **extra)
    return await create_and_launch(http, auth(REP), payload), payload


async def _first_mail(sandbox, email):
    async def got():
        return mail_to(sandbox, email) or None

    return (await poll(f"mail to {email}", got))[0]


async def _contact(http, auth, campaign_id, email, status=None):
    async def read():
        body = (
            await http.get(f"/v1/campaigns/{campaign_id}/contacts/{email}", headers=auth(REP))
        ).json()
        return body if status is None or body["status"] == status else None

    return await poll(f"{email} {status}", read)


def _next_business_day_9am_ny(after: dt.date) -> dt.datetime:
    us = holidays.country_holidays("US", years=[after.year, after.year + 1])
    d = after + dt.timedelta(days=1)
    while d.weekday() >= 5 or d in us:
        d += dt.timedelta(days=1)
    return dt.datetime.combine(d, dt.time(9), ZoneInfo("America/New_York")).astimezone(dt.UTC)


async def test_out_of_office_pauses_until_the_next_business_day_after_the_return_date(
    http, auth, sandbox, temporal_client
):
    away = f"away.{unique()}@acme.example"
    campaign_id, _ = await _launch(http, auth, [contact(away)])
    first = await _first_mail(sandbox, away)
    back = dt.date.today() + dt.timedelta(days=9)
    resp = await reply(
        http,
        to_message=first,
        subject="Automatic reply: " + first["subject"],
        text=f"I am out of the office until {back:%B} {back.day}, {back.year} with limited "
        "access to email.",
        headers={"Auto-Submitted": "auto-replied"},
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["classification"]["kind"] == "auto_reply"
    assert body["classification"]["return_date"] == back.isoformat()
    expected = _next_business_day_9am_ny(back)
    state = await _contact(http, auth, campaign_id, away, "paused")
    assert dt.datetime.fromisoformat(state["paused_until"]) == expected
    assert "out of office" in state["pause_reason"]
    assert len(mail_to(sandbox, away)) == 1  # step 2's due time passes while paused
    await http.post(f"/v1/campaigns/{campaign_id}/cancel", headers=auth(REP))
    handle = temporal_client.get_workflow_handle(sequence_workflow_id(campaign_id, away))
    await handle.result()
    await record_history(handle, "sequence_out_of_office_then_cancelled")


async def test_an_auto_reply_whose_return_date_has_passed_does_not_hold_the_sequence(
    http, auth, sandbox
):
    back_already = f"back.{unique()}@acme.example"
    campaign_id, _ = await _launch(
        http, auth, [contact(back_already)], test_mode={"wait_day_seconds": 2}
    )
    first = await _first_mail(sandbox, back_already)
    past = dt.date.today() - dt.timedelta(days=5)
    resp = await reply(
        http,
        to_message=first,
        subject="Out of office",
        text=f"I was out of the office until {past:%B} {past.day}, {past.year}.",
        headers={"Auto-Submitted": "auto-replied"},
    )
    assert resp.json()["classification"]["kind"] == "auto_reply"

    async def two():
        return len(mail_to(sandbox, back_already)) == 2 or None

    await poll("step 2 still sent", two)


async def test_each_reply_kind_is_routed(http, auth, sandbox, sessions, temporal_client):
    tag = unique()
    people = {
        kind: f"{kind}.{tag}@{kind.replace('_', '-')}-co.example"
        for kind in ("not_interested", "referral", "unsubscribe", "question")
    }
    campaign_id, payload = await _launch(http, auth, [contact(e) for e in people.values()])
    texts = {
        "not_interested": "Not interested, thanks. Please don't follow up.",
        "referral": "I'm not the right person - please talk to Jane Doe "
        "(jane.doe@referral-co.example), she runs operations.",
        "unsubscribe": "Please unsubscribe me from this list.",
        "question": "How much does it cost per seat?",
    }
    for kind, email in people.items():
        first = await _first_mail(sandbox, email)
        resp = await reply(http, to_message=first, text=texts[kind])
        assert resp.json()["classification"]["kind"] == kind, resp.text
    for kind, email in people.items():
        state = await _contact(http, auth, campaign_id, email, "stopped")
        assert kind.replace("_", " ") in state["stop_reason"]
    async with sessions() as s:
        referral = await s.scalar(
            select(CampaignContact.referral).where(
                CampaignContact.campaign_id == campaign_id,
                CampaignContact.email == people["referral"],
            )
        )
        suppressed = (
            await s.execute(
                select(Suppression.value, Suppression.sender_email, Suppression.reason).where(
                    Suppression.value.in_(list(people.values()))
                )
            )
        ).all()
    assert referral == {"name": "Jane Doe", "email": "jane.doe@referral-co.example"}
    assert suppressed == [(people["unsubscribe"], payload["sender"]["email"], "unsubscribed")]
    # Only the question reached the rep in Slack (a person must answer it).
    told = [m.text for m in sandbox.state.slack.messages(user_email=REP) if tag in m.text]
    assert len(told) == 1 and people["question"] in told[0]
    campaign = (await http.get(f"/v1/campaigns/{campaign_id}", headers=auth(REP))).json()
    assert campaign["counts"]["unsubscribed"] == 1 and campaign["counts"]["replied"] == 4
    for email in people.values():
        assert len(mail_to(sandbox, email)) == 1  # nobody got step 2
    handle = temporal_client.get_workflow_handle(
        sequence_workflow_id(campaign_id, people["referral"])
    )
    await handle.result()
    await record_history(handle, "sequence_referral")


async def test_one_click_unsubscribe_stops_every_campaign_of_that_sender(http, auth, sandbox):
    person = f"optout.{unique()}@acme.example"
    sender = f"maya.chen+{unique()}@dealflow.example"
    first_id, _ = await _launch(http, auth, [contact(person)], sender_email=sender)
    second_id, _ = await _launch(http, auth, [contact(person)], sender_email=sender)
    messages = await poll("both campaigns mailed", lambda: _at_least(mail_to(sandbox, person), 2))
    url = header(messages[0], "List-Unsubscribe").split(",")[0].strip(" <>")
    path = urllib.parse.urlsplit(url).path
    # RFC 8058: the mailbox provider POSTs this body, without cookies or credentials.
    resp = await http.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"unsubscribed": True, "email": person, "sender": sender}
    for campaign_id in (first_id, second_id):
        state = await _contact(http, auth, campaign_id, person, "stopped")
        assert "unsubscribed" in state["stop_reason"]
    # The footer link (GET) shows the page with its button; a tampered token is a 404 page.
    page = await http.get(path)
    assert page.status_code == 200 and person in page.text and 'method="post"' in page.text
    assert (await http.get(path[:-3] + "xyz")).status_code == 404
    # A new campaign of the same sender excludes the address in its preflight.
    third_id, _ = await _launch(http, auth, [contact(person)], sender_email=sender)
    excluded = await _contact(http, auth, third_id, person, "excluded")
    assert excluded["excluded_reason"] == "suppressed: unsubscribed"
    assert len(mail_to(sandbox, person)) == 2


async def test_the_footer_link_shows_a_page_and_only_its_button_unsubscribes(
    http, auth, sandbox, sessions
):
    person = f"scanned.{unique()}@acme.example"
    campaign_id, payload = await _launch(http, auth, [contact(person)])
    first = await _first_mail(sandbox, person)
    url = header(first, "List-Unsubscribe").split(",")[0].strip(" <>")
    path = urllib.parse.urlsplit(url).path
    # A mail scanner (or a link preview) fetches the link: a page, and nothing changes.
    for _ in range(2):
        page = await http.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert person in page.text and payload["sender"]["email"] in page.text
        assert 'method="post"' in page.text and 'name="confirm"' in page.text
    state = await _contact(http, auth, campaign_id, person)
    assert state["status"] != "stopped"
    async with sessions() as s:
        held = (await s.execute(select(Suppression).where(Suppression.value == person))).all()
    assert held == []
    # The person presses the button: the page's form posts to the same URL.
    done = await http.post(
        path,
        content=b"confirm=yes",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    state = await _contact(http, auth, campaign_id, person, "stopped")
    assert "unsubscribed" in state["stop_reason"]


async def test_bad_unsubscribe_tokens_are_4xx_never_5xx(http):
    # A NUL anywhere in a URL is refused before routing (api/body_limit.py): 400, the error body.
    nul = await http.get("/v1/unsubscribe/%00.%00")
    assert nul.status_code == 400 and nul.json()["error"]["code"], nul.text
    for token in ("%C3%A9%C3%A9.%C3%A9", "abc.def", "x" * 5000, "no-dot", "..."):
        page = await http.get(f"/v1/unsubscribe/{token}")
        assert page.status_code == 404 and "not valid" in page.text, token[:40]
        one_click = await http.post(
            f"/v1/unsubscribe/{token}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert one_click.status_code == 404, token[:40]
        assert one_click.json()["error"]["code"] == "not_found"


async def test_bounce_and_complaint_events_stop_and_suppress_opens_and_clicks_count(
    http, auth, sandbox, sessions
):
    tag = unique()
    bouncer, complainer = f"bounce.{tag}@acme.example", f"spam.{tag}@acme.example"
    campaign_id, _ = await _launch(http, auth, [contact(bouncer), contact(complainer)])
    b = await _first_mail(sandbox, bouncer)
    c = await _first_mail(sandbox, complainer)
    events = "/v1/webhooks/email/events"
    for i, kind in enumerate(("delivered", "open", "open", "click")):
        event = {"type": kind, "message_id": c["message_id"], "id": f"{tag}-{i}"}
        resp = await post_signed(http, events, event)
        assert resp.status_code == 200 and resp.json()["recorded"] is True
    bounce = {"type": "bounce", "message_id": b["message_id"], "bounce_type": "hard", "id": tag}
    assert (await post_signed(http, events, bounce)).json()["action"].startswith("stopped")
    again = await post_signed(http, events, bounce)
    assert again.json()["recorded"] is False  # the provider's retry is a no-op
    complaint = {"type": "complaint", "message_id": c["message_id"]}
    assert (await post_signed(http, events, complaint)).status_code == 200
    unknown = await post_signed(http, events, {"type": "open", "message_id": "nope@x"})
    assert unknown.json()["matched"] is None

    assert (
        "hard bounce"
        in (await _contact(http, auth, campaign_id, bouncer, "stopped"))["stop_reason"]
    )
    await _contact(http, auth, campaign_id, complainer, "stopped")
    async with sessions() as s:
        reasons = dict(
            (
                await s.execute(
                    select(Suppression.value, Suppression.reason).where(
                        Suppression.value.in_([bouncer, complainer]),
                        Suppression.sender_email == "*",
                    )
                )
            ).all()
        )
        opened = (
            await s.execute(
                select(CampaignSend.open_count, CampaignSend.click_count).where(
                    CampaignSend.message_id == c["message_id"].strip("<>")
                )
            )
        ).one()
    assert reasons == {bouncer: "hard_bounce", complainer: "complaint"}
    assert tuple(opened) == (2, 1)
    counts = (await http.get(f"/v1/campaigns/{campaign_id}", headers=auth(REP))).json()["counts"]
    assert counts["bounced"] == 1


async def test_a_colleagues_reply_pauses_the_rest_of_the_company(http, auth, sandbox):
    tag = unique()
    domain = f"umbrella{tag}.example"
    ann, ben, cat = (f"{n}.{tag}@{domain}" for n in ("ann", "ben", "cat"))
    other = f"dan.{tag}@elsewhere.example"
    campaign_id, _ = await _launch(
        http,
        auth,
        [contact(ann, company="Umbrella"), contact(ben, company="Umbrella"), contact(other)],
    )
    first = await _first_mail(sandbox, ann)
    await _first_mail(sandbox, ben)
    # Cat (not a contact) answers on Ann's thread.
    resp = await reply(
        http, to_message=first, from_email=cat, text="How much does it cost per seat?"
    )
    body = resp.json()
    assert body["matched"]["contact_email"] == ann
    assert [p["contact_email"] for p in body["paused_colleagues"]] == [ben]
    await _contact(http, auth, campaign_id, ann, "stopped")
    paused = await _contact(http, auth, campaign_id, ben, "paused")
    assert "same company replied" in paused["pause_reason"]
    assert (await _contact(http, auth, campaign_id, other))["status"] in ("waiting", "active")
    await http.post(f"/v1/campaigns/{campaign_id}/cancel", headers=auth(REP))


async def test_call_tasks_are_done_by_the_rep_or_time_out(
    http, auth, sandbox, sessions, temporal_client
):
    tag = unique()
    done_by_rep, timed_out = f"call.{tag}@acme.example", f"late.{tag}@acme.example"
    steps = [
        {"channel": "call_task", "subject": "Call {{ first_name }}", "body": "Ask about Q3."},
        {"channel": "linkedin_task", "task_timeout_hours": 0.0005},  # ~2 s
        email_step(subject="After our call"),
    ]
    campaign_id, _ = await _launch(
        http,
        auth,
        [contact(done_by_rep), contact(timed_out)],
        steps=steps,
        test_mode={"wait_day_seconds": 0},
    )
    waiting = await _contact(http, auth, campaign_id, done_by_rep, "waiting_task")
    assert any(
        h["event"] == "task.created" and "Call Call" in h["detail"] for h in waiting["history"]
    )
    for email in (done_by_rep, timed_out):
        resp = await http.post(
            f"/v1/campaigns/{campaign_id}/contacts/{email}/tasks/0/done", headers=auth(REP)
        )
        assert resp.status_code == 202, resp.text
    bad = await http.post(
        f"/v1/campaigns/{campaign_id}/contacts/{done_by_rep}/tasks/2/done", headers=auth(REP)
    )
    assert bad.status_code == 404

    async def emailed():
        return (mail_to(sandbox, done_by_rep) and mail_to(sandbox, timed_out)) or None

    await poll("emails after both tasks", emailed, timeout=30)
    history = (await _contact(http, auth, campaign_id, timed_out))["history"]
    events = [h["event"] for h in history]
    assert "task.done" in events and "task.timed_out" in events
    handle = temporal_client.get_workflow_handle(sequence_workflow_id(campaign_id, timed_out))
    await handle.result()
    await record_history(handle, "sequence_call_and_linkedin_tasks")


async def test_ab_variants_are_stable_per_contact_and_a_significant_winner_is_marked(
    http, auth, sandbox, sessions
):
    tag = unique()
    sender = f"maya.chen+{tag}@dealflow.example"
    await seasoned_sender(sessions, sender)  # past its warm-up: 24 sends today are fine
    people = [f"p{i}.{tag}@ab{i}.example" for i in range(24)]
    steps = [
        {
            "channel": "email",
            "variants": [
                {"name": "short", "subject": "Short one", "body": "Hi."},
                {"name": "long", "subject": "Long one", "body": "Hello there, a longer note."},
            ],
        }
    ]
    campaign_id, _ = await _launch(
        http, auth, [contact(e) for e in people], steps=steps, ab_min_sample=5, sender_email=sender
    )
    received = {}
    for email in people:
        received[email] = await _first_mail(sandbox, email)
    by_variant = {
        "short": [e for e in people if received[e]["subject"] == "Short one"],
        "long": [e for e in people if received[e]["subject"] == "Long one"],
    }
    assert len(by_variant["short"]) >= 5 and len(by_variant["long"]) >= 5
    for email in by_variant["short"]:
        await reply(http, to_message=received[email], text="Sounds interesting, tell me more.")

    async def stats():
        body = (await http.get(f"/v1/campaigns/{campaign_id}", headers=auth(REP))).json()
        step = body["steps"][0]
        return step if step["replied"] == len(by_variant["short"]) else None

    step = await poll("replies counted", stats)
    variants = {v["name"]: v for v in step["variants"]}
    assert variants["short"]["sent"] == len(by_variant["short"])
    assert variants["short"]["replied"] == variants["short"]["positive"] == len(by_variant["short"])
    assert variants["long"]["replied"] == 0
    assert step["winner"] == "short" and step["winner_positive"] == "short"


async def _at_least(messages, n):
    return messages if len(messages) >= n else None
