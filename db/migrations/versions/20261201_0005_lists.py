"""lists: keyset indexes for deals, campaigns, the approval inbox and tasks; contact_deals

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Every list sorts on a fixed key ending in the primary key (see db/lists.py, db/tasks.py); each
index below serves one list's filter and sort as a single range scan. Plain CREATE INDEX (these
tables are small today, and migrations run in one transaction); on a large production table,
build them first with CREATE INDEX CONCURRENTLY under the same names.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    # GET /v1/deals: ops (no filter), a rep (owner), by stage, by customer; newest first.
    op.create_index("ix_i9_deals_created_at_id", "deals", ["created_at", "id"])
    op.create_index("ix_i9_deals_owner_created_at_id", "deals", ["owner_email", "created_at", "id"])
    op.create_index("ix_i9_deals_stage_created_at_id", "deals", ["stage", "created_at", "id"])
    op.create_index(
        "ix_i9_deals_customer_created_at_id",
        "deals",
        [sa.text("lower(account_name)"), "created_at", "id"],
    )
    # GET /v1/campaigns
    op.create_index("ix_i9_campaigns_created_at_id", "campaigns", ["created_at", "id"])
    op.create_index(
        "ix_i9_campaigns_owner_created_at_id", "campaigns", ["owner_email", "created_at", "id"]
    )
    op.create_index(
        "ix_i9_campaigns_status_created_at_id", "campaigns", ["status", "created_at", "id"]
    )
    # GET /v1/approvals?status=pending: the pending steps a person holds, or is delegate of.
    op.create_index(
        "ix_i9_approval_requests_pending_holder",
        "approval_requests",
        ["holder_email", "due_at", "step_id"],
        postgresql_where=PENDING,
    )
    op.create_index(
        "ix_i9_approval_requests_pending_delegate",
        "approval_requests",
        ["delegate_email", "due_at", "step_id"],
        postgresql_where=sa.text("status = 'pending' AND delegate_email IS NOT NULL"),
    )
    # GET /v1/tasks: a person's tasks by status, soonest due (or oldest undated) first.
    op.create_index(
        "ix_i9_campaign_tasks_owner_status_sort",
        "campaign_tasks",
        ["owner_email", "status", sa.text("coalesce(due_at, created_at)"), "id"],
    )
    # POST /v1/campaigns/{id}/contacts/{email}/deal: one deal per campaign contact.
    op.create_table(
        "contact_deals",
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("contact_email", sa.String(length=320), nullable=False),
        sa.Column("deal_id", sa.String(length=40), nullable=False),
        sa.Column("inbound_id", sa.String(length=40), nullable=True),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["deal_id"],
            ["deals.id"],
            name=op.f("fk_contact_deals_deal_id_deals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "contact_email", name=op.f("pk_contact_deals")),
        sa.UniqueConstraint("deal_id", name=op.f("uq_contact_deals_deal_id")),
    )


def downgrade() -> None:
    op.drop_table("contact_deals")
    for name, table in (
        ("ix_i9_campaign_tasks_owner_status_sort", "campaign_tasks"),
        ("ix_i9_approval_requests_pending_delegate", "approval_requests"),
        ("ix_i9_approval_requests_pending_holder", "approval_requests"),
        ("ix_i9_campaigns_status_created_at_id", "campaigns"),
        ("ix_i9_campaigns_owner_created_at_id", "campaigns"),
        ("ix_i9_campaigns_created_at_id", "campaigns"),
        ("ix_i9_deals_customer_created_at_id", "deals"),
        ("ix_i9_deals_stage_created_at_id", "deals"),
        ("ix_i9_deals_owner_created_at_id", "deals"),
        ("ix_i9_deals_created_at_id", "deals"),
    ):
        op.drop_index(name, table_name=table)
