"""handoff: handoffs, what was supplied for them, their tasks and deliveries, learning events

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def _now() -> sa.Column:
    return sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "handoffs",
        sa.Column("deal_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("csm_email", sa.String(320)),
        sa.Column("csm_reason", sa.Text()),
        sa.Column("kickoff_at", TS),
        sa.Column("renewal_at", TS),
        _now(),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("deal_id", name="pk_handoffs"),
    )
    op.create_index("ix_handoffs_csm_email", "handoffs", ["csm_email"])
    op.create_table(
        "handoff_details",
        sa.Column("deal_id", sa.String(40), nullable=False),
        sa.Column("contacts", postgresql.JSONB(), nullable=False),
        sa.Column("success_goals", postgresql.JSONB(), nullable=False),
        sa.Column("timezone", sa.String(64)),
        sa.Column("notes", sa.Text()),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(320)),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("deal_id", name="pk_handoff_details"),
    )
    op.create_table(
        "handoff_tasks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("deal_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("item_key", sa.String(64), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("owner_email", sa.String(320), nullable=False),
        sa.Column("due_at", TS),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reminded_at", TS),
        sa.Column("escalated_to", sa.String(320)),
        _now(),
        sa.Column("done_at", TS),
        sa.Column("done_by", sa.String(320)),
        sa.PrimaryKeyConstraint("id", name="pk_handoff_tasks"),
        sa.UniqueConstraint("deal_id", "kind", "item_key", name="uq_handoff_tasks_key"),
    )
    op.create_index("ix_handoff_tasks_deal_id", "handoff_tasks", ["deal_id"])
    op.create_index(
        "ix_handoff_tasks_owner_open", "handoff_tasks", ["owner_email", "status", "due_at", "id"]
    )
    op.create_table(
        "handoff_deliveries",
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("deal_id", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(300)),
        _now(),
        sa.Column("sent_at", TS),
        sa.PrimaryKeyConstraint("key", name="pk_handoff_deliveries"),
    )
    op.create_index("ix_handoff_deliveries_deal_id", "handoff_deliveries", ["deal_id"])
    op.create_table(
        "learning_events",
        sa.Column("deal_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("cycle_days", sa.Numeric(10, 2)),
        sa.Column("total", sa.Numeric(18, 4)),
        sa.Column("currency", sa.String(3)),
        sa.Column("discount_pct", sa.Numeric(7, 4)),
        sa.Column("competitor", sa.String(200)),
        sa.Column("reason", sa.Text()),
        sa.Column("notes", sa.Text()),
        sa.Column("approval_hours", sa.Numeric(10, 2)),
        sa.Column("signature_hours", sa.Numeric(10, 2)),
        sa.PrimaryKeyConstraint("deal_id", name="pk_learning_events"),
    )
    op.create_index("ix_learning_events_at", "learning_events", ["at"])


def downgrade() -> None:
    for table in ("learning_events", "handoff_deliveries", "handoff_tasks", "handoff_details"):
        op.drop_table(table)
    op.drop_table("handoffs")
