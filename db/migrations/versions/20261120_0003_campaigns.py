"""campaigns: contacts, sends, sender caps, suppressions, replies, delivery events, tasks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-20
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaign_contact_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("contact_email", sa.String(length=320), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=300), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_contact_events")),
        sa.UniqueConstraint(
            "idempotency_key", name=op.f("uq_campaign_contact_events_idempotency_key")
        ),
    )
    op.create_index(
        "ix_campaign_contact_events_campaign_contact",
        "campaign_contact_events",
        ["campaign_id", "contact_email", "id"],
        unique=False,
    )
    op.create_table(
        "campaign_delivery_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_key", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=True),
        sa.Column("contact_email", sa.String(length=320), nullable=True),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_delivery_events")),
        sa.UniqueConstraint("event_key", name=op.f("uq_campaign_delivery_events_event_key")),
    )
    op.create_index(
        op.f("ix_campaign_delivery_events_message_id"),
        "campaign_delivery_events",
        ["message_id"],
        unique=False,
    )
    op.create_table(
        "campaign_inbound",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("from_email", sa.String(length=320), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("classification", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=True),
        sa.Column("contact_email", sa.String(length=320), nullable=True),
        sa.Column("matched_by", sa.String(length=16), nullable=True),
        sa.Column("replied_to", sa.String(length=255), nullable=True),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("variant", sa.String(length=64), nullable=True),
        sa.Column("action", sa.Text(), nullable=True),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_inbound")),
        sa.UniqueConstraint("message_id", name=op.f("uq_campaign_inbound_message_id")),
    )
    op.create_index(
        "ix_campaign_inbound_campaign_id_contact",
        "campaign_inbound",
        ["campaign_id", "contact_email"],
        unique=False,
    )
    op.create_table(
        "campaign_notifications",
        sa.Column("id", sa.String(length=300), nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("contact_email", sa.String(length=320), nullable=True),
        sa.Column("owner_email", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("posted", sa.Boolean(), nullable=False),
        sa.Column("slack_channel", sa.String(length=64), nullable=True),
        sa.Column("slack_ts", sa.String(length=32), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_notifications")),
    )
    op.create_index(
        op.f("ix_campaign_notifications_campaign_id"),
        "campaign_notifications",
        ["campaign_id"],
        unique=False,
    )
    op.create_table(
        "campaign_sends",
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("contact_email", sa.String(length=320), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(length=64), nullable=True),
        sa.Column("sender_email", sa.String(length=320), nullable=False),
        sa.Column("cap_day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("in_reply_to", sa.String(length=255), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bounce_type", sa.String(length=8), nullable=True),
        sa.Column("complained_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("open_count", sa.Integer(), nullable=False),
        sa.Column("click_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_campaign_sends")),
        sa.UniqueConstraint(
            "campaign_id", "contact_email", "step_index", name=op.f("uq_campaign_sends_campaign_id")
        ),
    )
    op.create_index(
        op.f("ix_campaign_sends_campaign_id"), "campaign_sends", ["campaign_id"], unique=False
    )
    op.create_index(
        "ix_campaign_sends_sender_email_cap_day",
        "campaign_sends",
        ["sender_email", "cap_day"],
        unique=False,
    )
    op.create_table(
        "campaign_tasks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("contact_email", sa.String(length=320), nullable=False),
        sa.Column("owner_email", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_by", sa.String(length=320), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_tasks")),
    )
    op.create_index(
        op.f("ix_campaign_tasks_campaign_id"), "campaign_tasks", ["campaign_id"], unique=False
    )
    op.create_index(
        "ix_campaign_tasks_owner_email_status",
        "campaign_tasks",
        ["owner_email", "status"],
        unique=False,
    )
    op.create_table(
        "sender_day_usage",
        sa.Column("sender_email", sa.String(length=320), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("sender_email", "day", name=op.f("pk_sender_day_usage")),
    )
    op.create_table(
        "sender_mailboxes",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("daily_limit", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("first_send_date", sa.Date(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("email", name=op.f("pk_sender_mailboxes")),
    )
    op.create_table(
        "suppressions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("value", sa.String(length=320), nullable=False),
        sa.Column("sender_email", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint("kind", "value", "sender_email", name=op.f("uq_suppressions_kind")),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("state_version", sa.Integer(), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("sender_email", sa.String(length=320), nullable=False),
        sa.Column("sender_name", sa.String(length=200), nullable=False),
        sa.Column("sender_daily_limit", sa.Integer(), nullable=False),
        sa.Column("sender_timezone", sa.String(length=64), nullable=False),
        sa.Column("steps", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("fallbacks", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("options", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("duplicates", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("preflight", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("contact_count", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("launched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_email"], ["people.email"], name=op.f("fk_campaigns_owner_email_people")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_index(op.f("ix_campaigns_owner_email"), "campaigns", ["owner_email"], unique=False)
    op.create_index(op.f("ix_campaigns_sender_email"), "campaigns", ["sender_email"], unique=False)
    op.create_table(
        "campaign_contacts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("first_name", sa.String(length=200), nullable=True),
        sa.Column("last_name", sa.String(length=200), nullable=True),
        sa.Column("company", sa.String(length=300), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("country", sa.String(length=16), nullable=True),
        sa.Column("fields", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("company_key", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("excluded_reason", sa.Text(), nullable=True),
        sa.Column("hold", sa.String(length=16), nullable=True),
        sa.Column("hold_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hold_reason", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("current_step", sa.Integer(), nullable=True),
        sa.Column("next_send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("referral", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_contacts_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_contacts")),
        sa.UniqueConstraint("campaign_id", "email", name=op.f("uq_campaign_contacts_campaign_id")),
    )
    op.create_index(
        "ix_campaign_contacts_campaign_id_company_key",
        "campaign_contacts",
        ["campaign_id", "company_key"],
        unique=False,
    )
    op.create_index(
        "ix_campaign_contacts_campaign_id_position",
        "campaign_contacts",
        ["campaign_id", "position"],
        unique=False,
    )
    op.create_index(
        op.f("ix_campaign_contacts_domain"), "campaign_contacts", ["domain"], unique=False
    )
    op.create_index(
        op.f("ix_campaign_contacts_email"), "campaign_contacts", ["email"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_campaign_contacts_email"), table_name="campaign_contacts")
    op.drop_index(op.f("ix_campaign_contacts_domain"), table_name="campaign_contacts")
    op.drop_index("ix_campaign_contacts_campaign_id_position", table_name="campaign_contacts")
    op.drop_index("ix_campaign_contacts_campaign_id_company_key", table_name="campaign_contacts")
    op.drop_table("campaign_contacts")
    op.drop_index(op.f("ix_campaigns_sender_email"), table_name="campaigns")
    op.drop_index(op.f("ix_campaigns_owner_email"), table_name="campaigns")
    op.drop_table("campaigns")
    op.drop_table("suppressions")
    op.drop_table("sender_mailboxes")
    op.drop_table("sender_day_usage")
    op.drop_index("ix_campaign_tasks_owner_email_status", table_name="campaign_tasks")
    op.drop_index(op.f("ix_campaign_tasks_campaign_id"), table_name="campaign_tasks")
    op.drop_table("campaign_tasks")
    op.drop_index("ix_campaign_sends_sender_email_cap_day", table_name="campaign_sends")
    op.drop_index(op.f("ix_campaign_sends_campaign_id"), table_name="campaign_sends")
    op.drop_table("campaign_sends")
    op.drop_index(
        op.f("ix_campaign_notifications_campaign_id"), table_name="campaign_notifications"
    )
    op.drop_table("campaign_notifications")
    op.drop_index("ix_campaign_inbound_campaign_id_contact", table_name="campaign_inbound")
    op.drop_table("campaign_inbound")
    op.drop_index(
        op.f("ix_campaign_delivery_events_message_id"), table_name="campaign_delivery_events"
    )
    op.drop_table("campaign_delivery_events")
    op.drop_index(
        "ix_campaign_contact_events_campaign_contact", table_name="campaign_contact_events"
    )
    op.drop_table("campaign_contact_events")
