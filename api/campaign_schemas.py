"""Campaign and mail-webhook schemas at the edge (``XxxCreate`` / ``XxxRead``).

Structural checks live here: types, sizes, windows that parse, templates that compile, unique
variant names. Per-contact checks that should exclude one contact rather than refuse the whole
import (a time zone that does not exist, a field a template needs) are the preflight's, and its
report says who was excluded and why.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, model_validator

from api.fields import BoundedText, JsonFloat, JsonInt, RequiredText, storable
from dealflow import limits
from domain.campaign_email import TemplateSyntaxProblem, check_step_templates
from domain.schedule import DAY_NAMES, SendWindow

# Every text type is as long as its column (dealflow/limits.py) and refuses what PostgreSQL cannot
# store (api/fields.py). Templates keep their whitespace: it is part of the email.
Template = BoundedText(limits.TEMPLATE, strip=False)
TimeZoneName = RequiredText(limits.TIMEZONE)
FieldName = RequiredText(limits.FIELD_NAME)
FieldValue = BoundedText(limits.FIELD_VALUE, strip=False)
MAX_CONTACTS = limits.MAX_CONTACTS


class _In(BaseModel):
    # Unknown fields are refused: a typo ("wait_day") must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class SenderCreate(_In):
    email: EmailStr
    name: RequiredText(limits.PERSON_NAME)
    daily_limit: Annotated[int, Field(ge=1, le=1_000_000)]
    timezone: TimeZoneName

    @model_validator(mode="after")
    def _zone(self) -> SenderCreate:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        return self


class SendWindowCreate(_In):
    # Short strings; SendWindow.parse says what is wrong with one that does not parse.
    start: BoundedText(16) = "09:00"
    end: BoundedText(16) = "17:00"
    days: Annotated[list[BoundedText(16)], Field(max_length=7)] | None = None
    skip_holidays: bool = True

    @model_validator(mode="after")
    def _parses(self) -> SendWindowCreate:
        SendWindow.parse(self.model_dump(exclude_none=True))  # raises ValueError with a reason
        return self

    def stored(self) -> dict[str, Any]:
        window = SendWindow.parse(self.model_dump(exclude_none=True))
        return {
            "start": self.start,
            "end": self.end,
            "days": [n for n, i in DAY_NAMES.items() if i in window.days],
            "days_index": sorted(window.days),
            "skip_holidays": self.skip_holidays,
        }


class VariantCreate(_In):
    name: RequiredText(limits.VARIANT_NAME)
    subject: Template | None = None
    body: Template


class StepCreate(_In):
    channel: Literal["email", "linkedin_task", "call_task"]
    wait_days: Annotated[int, Field(ge=0, le=365)] = 0
    send_window: SendWindowCreate = SendWindowCreate()
    subject: Template | None = None
    body: Template | None = None
    variants: Annotated[list[VariantCreate], Field(max_length=limits.MAX_VARIANTS)] | None = None
    # Tasks: done when the rep marks them, or after this long (default from Settings).
    task_timeout_hours: Annotated[float, Field(gt=0, le=24 * 90)] | None = None

    @model_validator(mode="after")
    def _content(self) -> StepCreate:
        if self.variants:
            names = [v.name for v in self.variants]
            if len(set(names)) != len(names):
                raise ValueError("variant names must be unique within a step")
            if self.channel != "email":
                raise ValueError("only email steps have variants")
        elif self.channel == "email" and not self.body:
            raise ValueError("an email step needs a body (or variants)")
        try:
            check_step_templates(self.model_dump())
        except TemplateSyntaxProblem as err:
            raise ValueError(f"template does not compile: {err}") from None
        return self


class ContactCreate(_In):
    email: EmailStr
    first_name: RequiredText(limits.PERSON_NAME) | None = None
    last_name: RequiredText(limits.PERSON_NAME) | None = None
    company: RequiredText(limits.COMPANY) | None = None
    title: RequiredText(limits.TITLE) | None = None
    # Checked by the preflight, not here: one bad zone in an import excludes one contact.
    timezone: TimeZoneName
    country: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?$")] | None
    ) = None
    # Stored in JSONB: no NUL, no NaN, no integer a JSON reader would round.
    fields: Annotated[
        dict[FieldName, FieldValue | JsonInt | JsonFloat | bool | None],
        Field(max_length=limits.MAX_CONTACT_FIELDS),
    ] = {}


class TestModeCreate(_In):
    """Sandbox profile only: time runs fast so a person can watch a campaign in minutes."""

    wait_day_seconds: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    reply_window_seconds: Annotated[float, Field(ge=0, le=86_400)] = 0.0


class CampaignCreate(_In):
    name: RequiredText(limits.CAMPAIGN_NAME)
    sender: SenderCreate
    steps: Annotated[list[StepCreate], Field(min_length=1, max_length=limits.MAX_STEPS)]
    contacts: Annotated[list[ContactCreate], Field(min_length=1, max_length=MAX_CONTACTS)]
    fallbacks: Annotated[dict[FieldName, FieldValue], Field(max_length=limits.MAX_FALLBACKS)] = {}
    pause_company_on_reply: bool | None = None
    ab_min_sample: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    test_mode: TestModeCreate | None = None

    @model_validator(mode="after")
    def _first_email_has_subject(self) -> CampaignCreate:
        for step in self.steps:
            if step.channel != "email":
                continue
            subjects = [v.subject for v in step.variants] if step.variants else [step.subject]
            if not all(subjects):
                raise ValueError("the first email step needs a subject (follow-ups may reuse it)")
            break
        return self


class CampaignCreated(BaseModel):
    id: str
    status: str


class VariantRead(BaseModel):
    name: str | None
    sent: int
    replied: int
    positive: int
    reply_rate: float
    positive_rate: float


class StepRead(BaseModel):
    index: int
    channel: str
    wait_days: int
    send_window: dict[str, Any]
    sent: int
    replied: int
    positive: int
    variants: list[VariantRead]
    # The variant whose reply (positive-reply) rate is significantly the best, once every
    # variant has the minimum sample; null until then.
    winner: str | None = None
    winner_positive: str | None = None


class CampaignRead(BaseModel):
    id: str
    name: str
    status: str
    status_reason: str | None
    owner_email: str
    sender: dict[str, Any]
    counts: dict[str, int]
    steps: list[StepRead]
    preflight: dict[str, Any] | None
    test_mode: dict[str, Any] | None
    workflow_id: str | None
    live: dict[str, Any] | None = None
    # While the campaign workflow is parked (status "needs_attention"): the failed step
    # ("activity"), "error", "error_type", "retry_state", "since"; null otherwise.
    attention: dict[str, Any] | None = None
    created_at: datetime
    launched_at: datetime | None
    finished_at: datetime | None


class ContactRead(BaseModel):
    campaign_id: str
    email: str
    status: str
    step: int | None
    steps_total: int
    next_send_at: datetime | None
    paused_until: datetime | None
    pause_reason: str | None
    stop_reason: str | None
    outcome: str | None
    excluded_reason: str | None
    sent: list[dict[str, Any]]
    history: list[dict[str, Any]]
    workflow_id: str
    live: bool
    # While this contact's sequence is parked (status "needs_attention"), as on CampaignRead.
    attention: dict[str, Any] | None = None


class RetryRead(BaseModel):
    """What ``POST …/retry`` asked to run again: the campaign workflow, and which sequences."""

    campaign_id: str
    campaign: bool
    contacts: list[str]


class TaskDoneCreate(_In):
    note: BoundedText(limits.REASON) | None = None


class SuppressionCreate(_In):
    email: EmailStr | None = None
    domain: (
        Annotated[
            str,
            StringConstraints(
                strip_whitespace=True,
                to_lower=True,
                max_length=limits.DOMAIN,
                pattern=r"^[a-z0-9.-]+\.[a-z]+$",
            ),
        ]
        | None
    ) = None
    reason: Literal["do_not_contact", "unsubscribed", "manual"] = "do_not_contact"
    sender_email: EmailStr | None = None  # None: every sender

    @model_validator(mode="after")
    def _one(self) -> SuppressionCreate:
        if (self.email is None) == (self.domain is None):
            raise ValueError("give exactly one of email or domain")
        return self


# --- mail webhooks ----------------------------------------------------------------------------


class InboundParts(_In):
    from_: Annotated[str, StringConstraints(max_length=1000)] = Field(alias="from")
    to: str | list[str] | None = None
    subject: Annotated[str, StringConstraints(max_length=5000)] = ""
    text: Annotated[str, StringConstraints(max_length=2_000_000)] = ""
    headers: dict[str, str | list[str]] = {}
    in_reply_to: str | None = None
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InboundRaw(_In):
    # A character is at least one byte: the body limit bounds it; this states it in the schema.
    raw: Annotated[str, StringConstraints(min_length=1, max_length=limits.MAX_INBOUND_MAIL_BODY)]


class DeliveryEventCreate(BaseModel):
    # Providers add fields we do not read; keep them (detail) rather than refuse the event.
    model_config = ConfigDict(extra="allow")

    type: Literal["delivered", "bounce", "complaint", "open", "click"]
    message_id: BoundedText(limits.MESSAGE_ID, min_len=3)
    # The event key is "<type>:<id>" in a String(200) column; a longer key is stored as its
    # sha256 (api/routes/mail_webhooks.py), so a provider's long id is kept, not refused (a 422
    # would make the provider retry the event until it gives up, and the event would be lost).
    id: BoundedText(limits.FIELD_VALUE) | None = None
    bounce_type: Literal["hard", "soft"] | None = None
    url: BoundedText(limits.FIELD_VALUE) | None = None
    at: datetime | None = None

    @model_validator(mode="after")
    def _extra_is_storable(self) -> DeliveryEventCreate:
        # The provider's other fields are kept in a JSONB column, which refuses NUL.
        _check_storable(self.model_extra or {})
        return self


def _check_storable(value: Any, depth: int = 0) -> None:
    if depth > 32:
        raise ValueError("nested too deeply")
    if isinstance(value, str):
        storable(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key, depth + 1)
            _check_storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("NaN and Infinity cannot be stored")
