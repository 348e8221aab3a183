"""Campaign tables: campaigns, their contacts, every send, replies, events, suppressions.

The sequence workflows hold the live state of each contact; these tables hold the facts that
must be checked atomically across workflows and processes, and so live in PostgreSQL:

* ``campaigns.status`` is what the send activity checks, under the campaign's status lock held
  shared, in the same transaction as the SMTP send: a pause takes that lock exclusively, so it
  waits for in-flight sends (see ``db.campaigns.lock_campaign_status``).
* ``campaign_contacts.hold`` is set by the mail webhooks *before* they answer (a reply, a bounce,
  an unsubscribe), and read by the send ``FOR UPDATE``: a reply that arrived before a due send
  stops it even if the sequence has not heard of it yet.
* ``campaign_sends`` has one row per (campaign, contact, step), keyed by the Message-ID the
  workflow made; it is claimed (committed) before the SMTP send, so a retried send finds it.
* ``sender_mailboxes``/``sender_day_usage`` count sends per mailbox and local day across every
  campaign that uses the mailbox.
* ``suppressions`` is who must never be mailed (by address or domain, for one sender or all).

Hot tables (sends, usage, events) carry ids without foreign keys to ``campaigns``: a foreign key
check would lock the campaign row on every insert, for nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base
from dealflow import limits


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Campaign(Base):
    __tablename__ = "campaigns"
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_email: Mapped[str] = mapped_column(ForeignKey("people.email"), index=True)
    name: Mapped[str] = mapped_column(String(limits.CAMPAIGN_NAME))
    # draft -> active <-> paused -> completed | cancelled; failed when the preflight refuses it.
    status: Mapped[str] = mapped_column(String(16), default="draft")
    # Bumped by every status change the sequences must hear about; a sequence keeps the newest.
    state_version: Mapped[int] = mapped_column(Integer, default=0)
    status_reason: Mapped[str | None] = mapped_column(Text)
    sender_email: Mapped[str] = mapped_column(String(320), index=True)
    sender_name: Mapped[str] = mapped_column(String(limits.PERSON_NAME))
    sender_daily_limit: Mapped[int] = mapped_column(Integer)
    sender_timezone: Mapped[str] = mapped_column(String(limits.TIMEZONE))
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    fallbacks: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    duplicates: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    preflight: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Set while the campaign workflow is parked in needs_attention: the failed step, its error
    # and when; cleared when a retry resumes it. ``status`` stays the send gate meanwhile.
    attention: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    contact_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    launched_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class CampaignContact(Base):
    __tablename__ = "campaign_contacts"
    __table_args__ = (
        UniqueConstraint("campaign_id", "email"),
        Index("ix_campaign_contacts_campaign_id_position", "campaign_id", "position"),
        Index("ix_campaign_contacts_campaign_id_company_key", "campaign_id", "company_key"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # order of the request, after merging
    email: Mapped[str] = mapped_column(String(320), index=True)  # trimmed, lower-case
    domain: Mapped[str] = mapped_column(String(255), index=True)
    first_name: Mapped[str | None] = mapped_column(String(limits.PERSON_NAME))
    last_name: Mapped[str | None] = mapped_column(String(limits.PERSON_NAME))
    company: Mapped[str | None] = mapped_column(String(limits.COMPANY))
    title: Mapped[str | None] = mapped_column(String(limits.TITLE))
    timezone: Mapped[str] = mapped_column(String(limits.TIMEZONE))
    country: Mapped[str | None] = mapped_column(String(limits.CONTACT_COUNTRY))
    fields: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # Who counts as "the same company" for a colleague's reply: the company name, else domain.
    company_key: Mapped[str] = mapped_column(String(300))
    # pending -> excluded | enrolled -> active/waiting/paused -> completed | stopped | cancelled
    status: Mapped[str] = mapped_column(String(16), default="pending")
    excluded_reason: Mapped[str | None] = mapped_column(Text)
    # Written by the webhooks before they answer, checked by every send (see module docstring).
    hold: Mapped[str | None] = mapped_column(String(16))  # "stopped" | "paused"
    hold_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    hold_reason: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(32))  # why it stopped, in one word
    current_step: Mapped[int | None] = mapped_column(Integer)
    next_send_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    referral: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Set while this contact's sequence is parked in needs_attention (as on ``campaigns``).
    attention: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = _now()


class CampaignSend(Base):
    """One email of one step to one contact. The Message-ID is the idempotency key.

    status: ``reserved`` (a slot on a later day, the cap being full), ``sending`` (claimed and
    committed before SMTP), ``handing_over`` (committed right before SMTP DATA), ``sent``,
    ``unconfirmed`` (a worker died while handing it over: it is never sent again — see
    activities/sequence.py), ``released`` (the server turned it down for now; it may be
    claimed again), ``failed`` (the server refused the recipient for good).
    """

    __tablename__ = "campaign_sends"
    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_email", "step_index"),
        Index("ix_campaign_sends_sender_email_cap_day", "sender_email", "cap_day"),
    )

    message_id: Mapped[str] = mapped_column(String(255), primary_key=True)  # no angle brackets
    campaign_id: Mapped[str] = mapped_column(String(40), index=True)
    contact_email: Mapped[str] = mapped_column(String(320))
    step_index: Mapped[int] = mapped_column(Integer)
    variant: Mapped[str | None] = mapped_column(String(64))
    sender_email: Mapped[str] = mapped_column(String(320))
    cap_day: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    subject: Mapped[str | None] = mapped_column(Text)
    in_reply_to: Mapped[str | None] = mapped_column(String(255))
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _now()
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    bounce_type: Mapped[str | None] = mapped_column(String(8))
    complained_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    opened_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    clicked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    open_count: Mapped[int] = mapped_column(Integer, default=0)
    click_count: Mapped[int] = mapped_column(Integer, default=0)


class SenderMailbox(Base):
    """A sending mailbox shared by every campaign that sends as it: its cap and warm-up."""

    __tablename__ = "sender_mailboxes"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    daily_limit: Mapped[int] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64))
    first_send_date: Mapped[dt.date | None] = mapped_column(Date)
    updated_at: Mapped[dt.datetime] = _now()


class SenderDayUsage(Base):
    """Sends made or reserved by a mailbox on one of its local days."""

    __tablename__ = "sender_day_usage"

    sender_email: Mapped[str] = mapped_column(String(320), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


class Suppression(Base):
    """Never mail this address (or domain), for one sender or for every sender ("*")."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("kind", "value", "sender_email"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8))  # "email" | "domain"
    value: Mapped[str] = mapped_column(String(320))  # lower-case
    sender_email: Mapped[str] = mapped_column(String(320), default="*")
    reason: Mapped[str] = mapped_column(String(32))  # unsubscribed, hard_bounce, complaint, ...
    source: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _now()


class InboundMessage(Base):
    """A message the mail provider forwarded to us, classified and (when it could be) matched."""

    __tablename__ = "campaign_inbound"
    __table_args__ = (
        Index("ix_campaign_inbound_campaign_id_contact", "campaign_id", "contact_email"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # The provider may deliver the same message twice; its Message-ID makes the second a no-op.
    message_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    received_at: Mapped[dt.datetime] = _now()
    from_email: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)  # the reply's own text, quotes stripped
    kind: Mapped[str] = mapped_column(String(32))
    rule: Mapped[str] = mapped_column(String(200))
    classification: Mapped[dict[str, Any]] = mapped_column(JSONB)
    campaign_id: Mapped[str | None] = mapped_column(String(40))
    contact_email: Mapped[str | None] = mapped_column(String(320))
    matched_by: Mapped[str | None] = mapped_column(String(16))  # thread | sender
    replied_to: Mapped[str | None] = mapped_column(String(255))  # our Message-ID it answers
    step_index: Mapped[int | None] = mapped_column(Integer)
    variant: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(Text)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # what the webhook answered


class DeliveryEvent(Base):
    __tablename__ = "campaign_delivery_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_key: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str] = mapped_column(String(255), index=True)
    campaign_id: Mapped[str | None] = mapped_column(String(40))
    contact_email: Mapped[str | None] = mapped_column(String(320))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    at: Mapped[dt.datetime] = _now()


class ContactEvent(Base):
    """A contact's history in a campaign, each entry with its reason."""

    __tablename__ = "campaign_contact_events"
    __table_args__ = (
        Index("ix_campaign_contact_events_campaign_contact", "campaign_id", "contact_email", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(40))
    contact_email: Mapped[str] = mapped_column(String(320))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    event: Mapped[str] = mapped_column(String(64))
    step_index: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(300), unique=True)


class RepTask(Base):
    """Work for the rep: a LinkedIn or call step, or a reply to follow up."""

    __tablename__ = "campaign_tasks"
    __table_args__ = (Index("ix_campaign_tasks_owner_email_status", "owner_email", "status"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # derived: retries converge
    campaign_id: Mapped[str] = mapped_column(String(40), index=True)
    contact_email: Mapped[str] = mapped_column(String(320))
    owner_email: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(32))  # linkedin_task, call_task, follow_up
    step_index: Mapped[int | None] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open, done, timed_out
    due_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    done_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    done_by: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = _now()


class RepNotification(Base):
    """What we told the rep (recorded always; posted to Slack when enabled)."""

    __tablename__ = "campaign_notifications"

    id: Mapped[str] = mapped_column(String(300), primary_key=True)  # the idempotency key
    campaign_id: Mapped[str] = mapped_column(String(40), index=True)
    contact_email: Mapped[str | None] = mapped_column(String(320))
    owner_email: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    posted: Mapped[bool] = mapped_column(Boolean, default=False)
    slack_channel: Mapped[str | None] = mapped_column(String(64))
    slack_ts: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = _now()


# The lists' keyset indexes (migration 20261201_0005, GET /v1/campaigns and /v1/tasks), declared
# here too so Alembic autogenerate and ``alembic check`` see the schema the migrations build.
Index("ix_i9_campaigns_created_at_id", Campaign.created_at, Campaign.id)
Index("ix_i9_campaigns_owner_created_at_id", Campaign.owner_email, Campaign.created_at, Campaign.id)
Index("ix_i9_campaigns_status_created_at_id", Campaign.status, Campaign.created_at, Campaign.id)
Index(
    "ix_i9_campaign_tasks_owner_status_sort",
    RepTask.owner_email,
    RepTask.status,
    func.coalesce(RepTask.due_at, RepTask.created_at),
    RepTask.id,
)
