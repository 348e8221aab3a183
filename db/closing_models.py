"""Closed-won tables: what was done outside (CRM, Stripe), revenue schedule rows, commissions.

``closing_steps`` is the ledger the closing activities check before every outside call: one row
per (deal, quote version, step), written once the outside system has answered, holding the id it
gave back (``external_ref``). A retried activity skips every step that has a ``done`` row, so
nothing already done is redone; the window between the outside call and the row is covered by
the call's own idempotency (Stripe's Idempotency-Key, the CRM note's reference looked up first).
A step Stripe or the CRM refused is ``rejected``, with the reason and a count in ``detail``.
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
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, Money


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class ClosingStep(Base):
    __tablename__ = "closing_steps"
    __table_args__ = (
        UniqueConstraint("deal_id", "quote_version", "step"),
        # The Stripe webhook finds the deal by the invoice (or subscription) id.
        Index("ix_closing_steps_step_external_ref", "step", "external_ref"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    deal_id: Mapped[str] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    quote_version: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(64))  # "stripe.customer", "crm.note", ...
    status: Mapped[str] = mapped_column(String(16))  # done, rejected
    external_ref: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class RevenueScheduleRow(Base):
    """One month of straight-line revenue of a closed deal."""

    __tablename__ = "revenue_schedule"
    __table_args__ = (UniqueConstraint("deal_id", "quote_version", "month_index"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    deal_id: Mapped[str] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    quote_version: Mapped[int] = mapped_column(Integer)
    month_index: Mapped[int] = mapped_column(Integer)
    period_start: Mapped[dt.date] = mapped_column(Date)
    period_end: Mapped[dt.date] = mapped_column(Date)  # inclusive
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[dt.datetime] = _now()


class Commission(Base):
    """The rep's commission on a closed deal, with the policy it was computed under."""

    __tablename__ = "commissions"
    __table_args__ = (UniqueConstraint("deal_id", "quote_version"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    deal_id: Mapped[str] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    quote_version: Mapped[int] = mapped_column(Integer)
    rep_email: Mapped[str] = mapped_column(String(320), index=True)
    basis_amount: Mapped[Decimal] = mapped_column(Money)  # contract value before tax
    rate_pct: Mapped[Decimal] = mapped_column(Numeric(7, 4))
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    payable_on: Mapped[str] = mapped_column(String(16))  # close, payment
    status: Mapped[str] = mapped_column(String(16))  # payable, pending_payment
    payable_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    policy_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = _now()
