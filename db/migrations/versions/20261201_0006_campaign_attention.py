"""campaign attention: where a parked campaign or sequence waits for a person

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Null while the process runs; the failed step and its error while it is parked.
    op.add_column("campaigns", sa.Column("attention", postgresql.JSONB(), nullable=True))
    op.add_column("campaign_contacts", sa.Column("attention", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("campaign_contacts", "attention")
    op.drop_column("campaigns", "attention")
