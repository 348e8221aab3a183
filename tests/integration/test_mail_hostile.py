"""Hostile inbound mail through the real API: huge messages, binary parts, NUL, bad signatures.

The API under test runs in this process's event loop (tests/conftest.py), so a webhook that did
its parsing on the loop would stop every other request, these tests' own included.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from api.routes import mail_webhooks
from db.campaign_models import DeliveryEvent, InboundMessage
from dealflow.limits import MAX_CLASSIFIED_TEXT
from tests.utils.campaigns import post_signed, signed_headers, unique
from tests.utils.deals import REP, create_deal
from tests.utils.polling import eventually

INBOUND = "/v1/webhooks/email/inbound"
EVENTS = "/v1/webhooks/email/events"
TEN_MB = 10_000_000  # the webhook's largest accepted raw message (InboundRaw.raw)
MAIL_DIR = Path(
    os.environ.get("DEALFLOW_MAIL_SAMPLES")
    or Path(__file__).resolve().parents[3] / "shared" / "data" / "mail"
)


def _huge_word(tag: str) -> str:
    head = f"From: Pat <pat.{tag}@acme.example>\nSubject: Re: hello\nMessage-ID: <{tag}@acme>\n\n"
    return head + "a" * (TEN_MB - len(head) - 1) + "\n"


def _many_parts(tag: str) -> str:
    head = (
        f"From: Pat <pat.{tag}@acme.example>\nSubject: Re: hello\nMessage-ID: <{tag}@acme>\n"
        "Content-Type: multipart/mixed; boundary=b\n\n"
    )
    part = "--b\nContent-Type: text/plain\n\nSounds interesting, tell me more.\n"
    count = (TEN_MB - len(head) - 10) // len(part)
    return head + part * count + "--b--\n"


@pytest.fixture
def held_classifier() -> Iterator[tuple[threading.Event, threading.Event]]:
    """Hold the inbound webhook in its worker thread, before the parse, until released."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(120)  # a hang guard only; the test releases it

    mail_webhooks.before_classify = hold
    try:
        yield entered, release
    finally:
        release.set()
        mail_webhooks.before_classify = None


@pytest.mark.parametrize("shape", ["one huge word", "many MIME parts"])
async def test_a_10_mb_message_does_not_stop_other_requests(http, auth, held_classifier, shape):
    entered, release = held_classifier
    deal = await create_deal(http, auth(REP))
    tag = unique()
    raw = _huge_word(tag) if shape == "one huge word" else _many_parts(tag)
    assert len(raw) <= TEN_MB and len(raw) > TEN_MB - 100
    body = json.dumps({"raw": raw}).encode()
    big = asyncio.create_task(http.post(INBOUND, content=body, headers=signed_headers(body)))

    async def being_processed() -> bool:
        assert not big.done(), big.result().text
        return entered.is_set()

    await eventually(being_processed, timeout=60, what="the 10 MB message in the classifier")
    # The message is being processed (held in the mail thread): the loop answers everyone else.
    for _ in range(3):
        assert (await http.get("/healthz")).status_code == 200
        got = await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))
        assert got.status_code == 200 and got.json()["id"] == deal["id"]
    assert not big.done()
    release.set()
    resp = await big
    assert resp.status_code == 200, resp.text
    classification = resp.json()["classification"]
    if shape == "one huge word":
        assert classification["kind"] == "other"
        assert classification["truncated_to"] == MAX_CLASSIFIED_TEXT
    else:
        assert classification["kind"] == "interested"


async def _stored(sessions, inbound_id: str) -> InboundMessage:
    async with sessions() as s:
        row = (
            await s.execute(select(InboundMessage).where(InboundMessage.id == inbound_id))
        ).scalar_one()
    return row


def _clean(text: str | None) -> bool:
    text = text or ""
    return "\x00" not in text and not any("\ud800" <= ch <= "\udfff" for ch in text)


def _sample(name: str) -> str:
    path = MAIL_DIR / name
    if not path.is_file():
        pytest.fail(f"mail sample {path} not found (set DEALFLOW_MAIL_SAMPLES)")
    # As a provider forwards a message in JSON: text, with undecodable bytes as lone surrogates.
    return path.read_bytes().decode("utf-8", errors="surrogateescape")


@pytest.mark.parametrize(
    "sample",
    [
        "bounces/rfc3464-51.eml",  # a Gmail bounce whose report carries a PNG part
        "bounces/lhost-office365-01.eml",  # an Office 365 bounce whose text decodes to a NUL
        "bounces/lhost-ezweb-03.eml",  # 8-bit bytes that are not UTF-8
    ],
)
async def test_real_bounces_with_binary_parts_and_nul_are_recorded(http, sessions, sample):
    raw = _sample(sample)
    resp = await post_signed(http, INBOUND, {"raw": raw})
    assert resp.status_code == 200, resp.text
    assert resp.json()["classification"]["kind"] == "bounce"
    row = await _stored(sessions, resp.json()["inbound_id"])
    assert row.kind == "bounce"
    for value in (row.text, row.subject, row.from_email, json.dumps(row.classification)):
        assert _clean(value)
    assert "PNG" not in (row.text or "") and "iVBOR" not in (row.text or "")


async def test_nul_and_lone_surrogates_never_reach_a_column(http, sessions):
    tag = unique()
    payload = {
        "from": f"pat.{tag}\u0000@acme.example",
        "subject": "Re: hello\u0000 \ud800there",
        "text": "Sounds interesting\u0000, tell me more \udfff.",
        "headers": {"Message-ID": f"<{tag}\u0000@acme.example>", "X-Odd": "\ud83d"},
    }
    resp = await post_signed(http, INBOUND, payload)
    assert resp.status_code == 200, resp.text
    assert resp.json()["classification"]["kind"] == "interested"
    row = await _stored(sessions, resp.json()["inbound_id"])
    assert row.subject == "Re: hello there"
    assert row.text == "Sounds interesting, tell me more ."
    assert row.from_email == f"pat.{tag}@acme.example"
    assert row.message_id == f"{tag}@acme.example"

    event = {"type": "open", "message_id": f"<nope.{tag}\u0000@x>", "note": "a\u0000b\ud800"}
    event["id"] = "e" * 200  # with the "open:" prefix, longer than the event key column
    resp = await post_signed(http, EVENTS, event)
    assert resp.status_code == 200, resp.text
    assert resp.json()["recorded"] is True
    async with sessions() as s:
        stored = (
            await s.execute(
                select(DeliveryEvent).where(DeliveryEvent.message_id == f"nope.{tag}@x")
            )
        ).scalar_one()
    assert stored.detail["note"] == "ab"


def _malformed_signatures(body: bytes) -> list[bytes]:
    good = signed_headers(body)["X-Dealflow-Signature"]
    t, v1 = (item.partition("=")[2] for item in good.split(","))
    return [
        b"",
        b"garbage",
        f"v1={v1}".encode(),  # no t=
        f"t=,v1={v1}".encode(),
        f"t=abc,v1={v1}".encode(),  # non-numeric t
        f"t=-{t},v1={v1}".encode(),
        f"t={t}.5,v1={v1}".encode(),
        f"t={'9' * 5000},v1={v1}".encode(),  # huge t: more digits than int() takes
        f"t={'9' * 400},v1={v1}".encode(),  # huge t: overflows a float
        f"t={t}".encode(),  # no v1
        f"t={t},v1={'zz' * 32}".encode(),  # non-hex v1
        f"t={t},v1={v1[:-1]}".encode(),  # short v1
        f"t={t},v1=".encode() + "é".encode("latin-1") * 64,  # non-ASCII v1
        f"t={t},v1={v1}".encode() + b"\xff",
        ("t=" + t + ",v1=" + v1 + ",").encode() * 100,  # oversized
    ]


@pytest.mark.parametrize("path", [INBOUND, EVENTS])
async def test_malformed_signature_headers_are_401_with_the_error_body(http, path):
    body = json.dumps({"type": "open", "message_id": "x@y.example"}).encode()
    for header in _malformed_signatures(body):
        resp = await http.post(
            path,
            content=body,
            headers={"Content-Type": "application/json", "X-Dealflow-Signature": header},
        )
        assert resp.status_code == 401, (header[:80], resp.status_code, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "invalid_signature" and error["message"], header[:80]
    # A far-future timestamp that parses is "too old (or from the future)".
    future = signed_headers(body, at=int(time.time()) + 10**9)
    resp = await http.post(path, content=body, headers=future)
    assert resp.status_code == 401 and "future" in resp.json()["error"]["message"]
    # The same body with a well-formed signature gets past the check (the inbound webhook then
    # refuses this body's fields with 422; the events webhook records it).
    signed = await http.post(path, content=body, headers=signed_headers(body))
    assert signed.status_code == (200 if path == EVENTS else 422), signed.text
