"""closing: the closed-won step ledger, revenue schedule rows, commissions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-20
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _deal_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["deal_id"], ["deals.id"], name=op.f(f"fk_{table}_deal_id_deals"), ondelete="CASCADE"
    )


def _created_at(name: str = "created_at") -> sa.Column:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "closing_steps",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("deal_id", sa.String(length=40), nullable=False),
        sa.Column("quote_version", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("external_ref", sa.String(length=255), nullable=True),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        _created_at(),
        _created_at("updated_at"),
        _deal_fk("closing_steps"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_closing_steps")),
        sa.UniqueConstraint(
            "deal_id", "quote_version", "step", name=op.f("uq_closing_steps_deal_id")
        ),
    )
    op.create_index(op.f("ix_closing_steps_deal_id"), "closing_steps", ["deal_id"], unique=False)
    op.create_index(
        "ix_closing_steps_step_external_ref",
        "closing_steps",
        ["step", "external_ref"],
        unique=False,
    )
    op.create_table(
        "revenue_schedule",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("deal_id", sa.String(length=40), nullable=False),
        sa.Column("quote_version", sa.Integer(), nullable=False),
        sa.Column("month_index", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        _created_at(),
        _deal_fk("revenue_schedule"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revenue_schedule")),
        sa.UniqueConstraint(
            "deal_id", "quote_version", "month_index", name=op.f("uq_revenue_schedule_deal_id")
        ),
    )
    op.create_index(
        op.f("ix_revenue_schedule_deal_id"), "revenue_schedule", ["deal_id"], unique=False
    )
    op.create_table(
        "commissions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("deal_id", sa.String(length=40), nullable=False),
        sa.Column("quote_version", sa.Integer(), nullable=False),
        sa.Column("rep_email", sa.String(length=320), nullable=False),
        sa.Column("basis_amount", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("rate_pct", sa.Numeric(precision=7, scale=4), nullable=False),
        sa.Column("amount", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payable_on", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payable_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        _created_at(),
        _deal_fk("commissions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commissions")),
        sa.UniqueConstraint("deal_id", "quote_version", name=op.f("uq_commissions_deal_id")),
    )
    op.create_index(op.f("ix_commissions_deal_id"), "commissions", ["deal_id"], unique=False)
    op.create_index(op.f("ix_commissions_rep_email"), "commissions", ["rep_email"], unique=False)


def downgrade() -> None:
    op.drop_table("commissions")
    op.drop_table("revenue_schedule")
    op.drop_table("closing_steps")
