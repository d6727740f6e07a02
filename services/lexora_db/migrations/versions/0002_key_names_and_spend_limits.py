"""key names and spend limits

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("name", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("spend_limit_micro", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("reservations") as batch:
        batch.add_column(sa.Column("key_id", sa.String(length=40), nullable=True))
    op.create_table(
        "key_spend",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("spent_micro", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("held_micro", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )


def downgrade() -> None:
    op.drop_table("key_spend")
    with op.batch_alter_table("reservations") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("spend_limit_micro")
        batch.drop_column("name")
