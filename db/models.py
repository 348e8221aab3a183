"""SQLAlchemy 2 models: PostgreSQL is the system of record.

Workflows hold the live state of a process; these tables hold the facts that must outlive it and
be queried across deals: who is who, what was quoted and rendered, and the audit trail.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, Money
from dealflow import limits


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Person(Base):
    """Reps, approvers, CSMs, ops: the org directory."""

    __tablename__ = "people"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(200))
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    approver_roles: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    manager_email: Mapped[str | None] = mapped_column(String(320))
    backup_email: Mapped[str | None] = mapped_column(String(320))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    slack_user_id: Mapped[str | None] = mapped_column(String(32))
    specialties: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    capacity: Mapped[int | None] = mapped_column(Integer)
    ooo_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ooo_delegate_email: Mapped[str | None] = mapped_column(String(320))
    updated_at: Mapped[dt.datetime] = _now()


class ApiKey(Base):
    """API keys, stored as SHA-256 of the key.

    Keys are 128-bit random strings, so a fast hash is enough: there is nothing to brute-force,
    and a per-request bcrypt would cost more than the request.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(24))
    person_email: Mapped[str] = mapped_column(ForeignKey("people.email"))
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = _now()
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Deal(Base):
    __tablename__ = "deals"
    # Fetch server-side defaults (timestamps) in the INSERT's RETURNING: no lazy load afterwards.
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(limits.EXTERNAL_ID), unique=True)
    owner_email: Mapped[str] = mapped_column(ForeignKey("people.email"), index=True)
    name: Mapped[str] = mapped_column(String(limits.DEAL_NAME))
    currency: Mapped[str] = mapped_column(String(3))
    term_months: Mapped[int] = mapped_column(Integer)
    billing_frequency: Mapped[str] = mapped_column(String(16))
    payment_terms_days: Mapped[int] = mapped_column(Integer)
    discount_pct: Mapped[Decimal] = mapped_column(Numeric(7, 4))
    account_name: Mapped[str] = mapped_column(String(limits.ACCOUNT_NAME))
    account_domain: Mapped[str] = mapped_column(String(limits.DOMAIN))
    account_country: Mapped[str] = mapped_column(String(2))
    account_region: Mapped[str | None] = mapped_column(String(limits.REGION))
    account_employees: Mapped[int | None] = mapped_column(Integer)
    account_industry: Mapped[str | None] = mapped_column(String(limits.INDUSTRY))
    account_tax_id: Mapped[str | None] = mapped_column(String(limits.TAX_ID))
    competitor: Mapped[str | None] = mapped_column(String(limits.COMPETITOR))
    notes: Mapped[str | None] = mapped_column(Text)
    # Mirrors the closure's stage for queries across deals; the workflow is the live truth.
    stage: Mapped[str] = mapped_column(String(32), default="draft")
    # The date the rep needs the deal closed by; the approval chain warns when it will be late.
    close_by: Mapped[dt.date | None] = mapped_column(Date)
    # Bumped by every PATCH: a quote records which revision of the deal it priced.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()

    line_items: Mapped[list[LineItem]] = relationship(
        order_by="LineItem.position", cascade="all, delete-orphan", lazy="selectin"
    )
    signers: Mapped[list[Signer]] = relationship(
        order_by="Signer.routing_order, Signer.id", cascade="all, delete-orphan", lazy="selectin"
    )
    custom_terms: Mapped[list[CustomTerm]] = relationship(
        order_by="CustomTerm.position", cascade="all, delete-orphan", lazy="selectin"
    )


class LineItem(Base):
    __tablename__ = "deal_line_items"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    deal_id: Mapped[str] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(limits.SKU))
    description: Mapped[str] = mapped_column(String(limits.LINE_DESCRIPTION))
    quantity: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    unit_price: Mapped[Decimal] = mapped_column(Money)


class Signer(Base):
    __tablename__ = "deal_signers"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    deal_id: Mapped[str] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(limits.PERSON_NAME))
    email: Mapped[str] = mapped_column(String(limits.EMAIL))
    title: Mapped[str | None] = mapped_column(String(limits.TITLE))
    routing_order: Mapped[int] = mapped_column(Integer)


class CustomTerm(Base):
    __tablename__ = "deal_custom_terms"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    deal_id: Mapped[str] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)


class QuoteVersion(Base):
    """A priced quote. (deal_id, version) is unique: a retried pricing activity finds its row."""

    __tablename__ = "quote_versions"
    __table_args__ = (UniqueConstraint("deal_id", "version"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    deal_id: Mapped[str] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    deal_revision: Mapped[int] = mapped_column(Integer)
    terms: Mapped[dict[str, Any]] = mapped_column(JSONB)  # the DealTerms that were priced
    terms_sha256: Mapped[str] = mapped_column(String(64))
    quote: Mapped[dict[str, Any]] = mapped_column(JSONB)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[Decimal] = mapped_column(Money)
    discount: Mapped[Decimal] = mapped_column(Money)
    tax: Mapped[Decimal] = mapped_column(Money)
    total: Mapped[Decimal] = mapped_column(Money)
    tax_table_version: Mapped[str] = mapped_column(String(64))
    approval_plan: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = _now()


class Document(Base):
    """A rendered contract document. One row per (deal, kind, version); the PDF is the artefact."""

    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("deal_id", "kind", "version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    deal_id: Mapped[str] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)  # the quote version it was rendered from
    template: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(100), default="application/pdf")
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    storage_ref: Mapped[str] = mapped_column(String(500))
    html_sha256: Mapped[str] = mapped_column(String(64))
    html_storage_ref: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = _now()


class AuditEvent(Base):
    """Append-only (a trigger refuses UPDATE and DELETE) and hash-chained.

    Each row's hash covers its content and the previous row's hash, so editing or removing a row
    breaks every hash after it.
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_deal_id_id", "deal_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    deal_id: Mapped[str | None] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(320))
    channel: Mapped[str] = mapped_column(String(32))  # api, workflow, slack, email, link, system
    event: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # Set by activities from a key made in the workflow: a retried write lands once.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class IdempotencyRecord(Base):
    """The first response to a create, replayed for a retry with the same Idempotency-Key."""

    __tablename__ = "idempotency_records"

    person_email: Mapped[str] = mapped_column(String(320), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(500))
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = _now()


class ApprovalRequest(Base):
    """One approval step: who must decide, why, by when, and what they decided.

    Written by the approval chain's activities; the workflow holds the live state and this row
    is its durable mirror (and the source for decision-time statistics).
    """

    __tablename__ = "approval_requests"

    step_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    deal_id: Mapped[str] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    quote_version: Mapped[int] = mapped_column(Integer)
    workflow_id: Mapped[str] = mapped_column(String(200))
    stage: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(64))
    approver_email: Mapped[str] = mapped_column(String(320), index=True)
    holder_email: Mapped[str] = mapped_column(String(320), index=True)
    delegate_email: Mapped[str | None] = mapped_column(String(320), index=True)
    reason: Mapped[str] = mapped_column(Text)
    inputs_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), index=True)
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    reminded_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    escalated_to: Mapped[str | None] = mapped_column(String(320))
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    decided_by: Mapped[str | None] = mapped_column(String(320))
    decision: Mapped[str | None] = mapped_column(String(32))
    comment: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    channel: Mapped[str | None] = mapped_column(String(16))


class ApprovalDelivery(Base):
    """A message sent about a step. The unique key makes a retried delivery find its twin."""

    __tablename__ = "approval_deliveries"
    __table_args__ = (UniqueConstraint("step_id", "recipient_email", "channel", "purpose"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    step_id: Mapped[str] = mapped_column(String(200), index=True)
    recipient_email: Mapped[str] = mapped_column(String(320))
    channel: Mapped[str] = mapped_column(String(16))  # slack, email
    purpose: Mapped[str] = mapped_column(String(32))  # request, reminder, escalation.N, ...
    external_ref: Mapped[str | None] = mapped_column(String(300))  # Slack ts / Message-ID
    slack_channel: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # sending, sent
    created_at: Mapped[dt.datetime] = _now()


class ApprovalLink(Base):
    """A signed approval link: bound to one approver and one step, expiring, single use."""

    __tablename__ = "approval_links"

    token_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    step_id: Mapped[str] = mapped_column(String(200), index=True)
    approver_email: Mapped[str] = mapped_column(String(320))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _now()


# The lists' keyset indexes (migration 20261201_0005, GET /v1/deals and /v1/approvals), declared
# here too so Alembic autogenerate and ``alembic check`` see the schema the migrations build.
Index("ix_i9_deals_created_at_id", Deal.created_at, Deal.id)
Index("ix_i9_deals_owner_created_at_id", Deal.owner_email, Deal.created_at, Deal.id)
Index("ix_i9_deals_stage_created_at_id", Deal.stage, Deal.created_at, Deal.id)
Index("ix_i9_deals_customer_created_at_id", func.lower(Deal.account_name), Deal.created_at, Deal.id)
Index(
    "ix_i9_approval_requests_pending_holder",
    ApprovalRequest.holder_email,
    ApprovalRequest.due_at,
    ApprovalRequest.step_id,
    postgresql_where=text("status = 'pending'"),
)
Index(
    "ix_i9_approval_requests_pending_delegate",
    ApprovalRequest.delegate_email,
    ApprovalRequest.due_at,
    ApprovalRequest.step_id,
    postgresql_where=text("status = 'pending' AND delegate_email IS NOT NULL"),
)
