"""Documented bodies of the routes that answer plain dicts (see ``OPERATIONS`` in api/openapi.py).

Documentation only: the routes build their dicts, and the contract test checks every real answer
against these. They name the fields API.md promises and stay open (extra fields allowed), so a
route may add a field without breaking the contract; renaming or dropping one fails the test.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Health(_Open):
    status: Literal["ok"]


class Readiness(_Open):
    status: Literal["ready"]
    checks: dict[str, str]


class AuditEventRead(_Open):
    id: int
    at: dt.datetime
    actor: str
    channel: str
    event: str
    detail: dict[str, Any] | None
    hash: str
    prev_hash: str


class AuditVerification(_Open):
    ok: bool
    checked: int
    first_bad_id: int | None
    problem: str | None


class AuditTrail(_Open):
    deal_id: str
    events: list[AuditEventRead]
    verification: AuditVerification


class OutOfOfficeRead(_Open):
    email: str
    until: dt.datetime
    delegate_email: str
    moved_steps: list[str]


class OfflineSignatureAccepted(_Open):
    document: dict[str, Any]
    status: Literal["accepted"]


class RetryRequested(_Open):
    status: str


class TaskDoneRead(_Open):
    campaign_id: str
    email: str
    step: int
    status: Literal["done"]


class SuppressionRead(_Open):
    kind: Literal["email", "domain"]
    value: str
    reason: str | None
    sender_email: str


class Unsubscribed(_Open):
    unsubscribed: bool
    email: str
    sender: str


class LinkOutcome(_Open):
    outcome: str


class SlackAnswer(_Open):
    """Empty (nothing to do), or an ephemeral message to the clicking user."""

    response_type: Literal["ephemeral"] | None = None
    replace_original: bool | None = None
    text: str | None = None


class WebhookReceived(_Open):
    """DocuSign Connect and Stripe: acknowledged; whether it matched a deal (and was signalled)."""

    received: bool
    matched: bool | None = None
    ignored: bool | None = None
    signalled: bool | None = None


class MatchedContact(_Open):
    campaign_id: str
    contact_email: str


class Classification(_Open):
    kind: Literal[
        "auto_reply",
        "bounce",
        "complaint",
        "unsubscribe",
        "interested",
        "meeting_request",
        "not_interested",
        "referral",
        "question",
        "objection",
        "other",
    ]
    rule: str
    return_date: dt.date | None = None
    bounce_type: Literal["hard", "soft"] | None = None


class InboundRead(_Open):
    classification: Classification
    matched: MatchedContact | None


class DeliveryEventRead(_Open):
    recorded: bool
    matched: MatchedContact | None
    action: str
