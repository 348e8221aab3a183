"""Handoff tables: the handoff per won deal, what the rep or CSM supplied, tasks, deliveries,
and one learning event per won or lost deal.

``handoff_tasks`` holds every task the handoff creates for a person (onboarding items, renewal
alerts, the CS lead's "assign a CSM"), one row per (deal, kind, key), so a retried activity
finds the row it made. ``handoff_deliveries`` is the once-only ledger for outbound messages
(email, Slack, CRM): a row per key, ``sent`` once the outside system answered.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Index, Integer, Numeric, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, Money


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Handoff(Base):
    """The database mirror of a handoff: capacity counts and the deal summary read it."""

    __tablename__ = "handoffs"

    deal_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    status_reason: Mapped[str | None] = mapped_column(Text)  # why it waits (a park, a field)
    csm_email: Mapped[str | None] = mapped_column(String(320), index=True)
    csm_reason: Mapped[str | None] = mapped_column(Text)
    kickoff_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    renewal_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class HandoffDetails(Base):
    """What the rep or CSM supplied for the package (PATCH /v1/handoffs/{deal}), any time."""

    __tablename__ = "handoff_details"

    deal_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    contacts: Mapped[list[dict]] = mapped_column(JSONB, default=list)
    success_goals: Mapped[list[str]] = mapped_column(JSONB, default=list)
    timezone: Mapped[str | None] = mapped_column(String(64))
    notes: Mapped[str | None] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    updated_by: Mapped[str | None] = mapped_column(String(320))
    updated_at: Mapped[dt.datetime] = _now()


class HandoffTask(Base):
    __tablename__ = "handoff_tasks"
    __table_args__ = (
        UniqueConstraint("deal_id", "kind", "item_key", name="uq_handoff_tasks_key"),
        Index("ix_handoff_tasks_owner_open", "owner_email", "status", "due_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "hot_..."
    deal_id: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(
        String(32)
    )  # onboarding_item | renewal_alert | csm_assignment
    item_key: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(300))
    detail: Mapped[str | None] = mapped_column(Text)
    owner_email: Mapped[str] = mapped_column(String(320))
    due_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | done | cancelled
    reminded_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    escalated_to: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = _now()
    done_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    done_by: Mapped[str | None] = mapped_column(String(320))


class HandoffDelivery(Base):
    __tablename__ = "handoff_deliveries"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    deal_id: Mapped[str] = mapped_column(String(40), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # email | slack | crm
    recipient: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16))  # sending | sent
    ref: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[dt.datetime] = _now()
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class LearningEvent(Base):
    """One per won or lost deal (the deal id is the key), for later analysis."""

    __tablename__ = "learning_events"

    deal_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # won | lost
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    cycle_days: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    total: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str | None] = mapped_column(String(3))
    discount_pct: Mapped[Decimal | None] = mapped_column(Numeric(7, 4))
    competitor: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)
    approval_hours: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    signature_hours: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
