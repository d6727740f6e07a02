"""credit leases: credit a gateway replica covers requests with from memory

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_leases",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40)),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("amount_micro", sa.BigInteger(), nullable=False),
        sa.Column("held_micro", sa.BigInteger(), nullable=False),
        sa.Column("settled_micro", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("settled_requests", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("expected_requests", sa.Integer()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_credit_leases_account_id", "credit_leases", ["account_id"])
    op.create_index("ix_credit_leases_open_expiry", "credit_leases", ["status", "expires_at"])
    # An account's spend in the last minute sizes its leases.
    op.create_index("ix_ledger_account_time", "ledger_entries", ["account_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_ledger_account_time", table_name="ledger_entries")
    op.drop_table("credit_leases")
