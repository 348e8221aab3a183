"""approval requests, deliveries and signed links; deals.close_by

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-20
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("deals", sa.Column("close_by", sa.Date(), nullable=True))
    op.create_table(
        "approval_requests",
        sa.Column("step_id", sa.String(length=200), nullable=False),
        sa.Column("deal_id", sa.String(length=40), nullable=False),
        sa.Column("quote_version", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("approver_email", sa.String(length=320), nullable=False),
        sa.Column("holder_email", sa.String(length=320), nullable=False),
        sa.Column("delegate_email", sa.String(length=320), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("inputs_sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalated_to", sa.String(length=320), nullable=True),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("decided_by", sa.String(length=320), nullable=True),
        sa.Column("decision", sa.String(length=32), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["deal_id"],
            ["deals.id"],
            name=op.f("fk_approval_requests_deal_id_deals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("step_id", name=op.f("pk_approval_requests")),
    )
    for col in ("deal_id", "approver_email", "holder_email", "delegate_email", "status"):
        op.create_index(
            op.f(f"ix_approval_requests_{col}"), "approval_requests", [col], unique=False
        )
    op.create_table(
        "approval_deliveries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("step_id", sa.String(length=200), nullable=False),
        sa.Column("recipient_email", sa.String(length=320), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("external_ref", sa.String(length=300), nullable=True),
        sa.Column("slack_channel", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_deliveries")),
        sa.UniqueConstraint(
            "step_id",
            "recipient_email",
            "channel",
            "purpose",
            name=op.f("uq_approval_deliveries_step_id"),
        ),
    )
    op.create_index(
        op.f("ix_approval_deliveries_step_id"), "approval_deliveries", ["step_id"], unique=False
    )
    op.create_table(
        "approval_links",
        sa.Column("token_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=200), nullable=False),
        sa.Column("approver_email", sa.String(length=320), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("token_id", name=op.f("pk_approval_links")),
    )
    op.create_index(op.f("ix_approval_links_step_id"), "approval_links", ["step_id"], unique=False)


def downgrade() -> None:
    op.drop_table("approval_links")
    op.drop_table("approval_deliveries")
    op.drop_table("approval_requests")
    op.drop_column("deals", "close_by")
