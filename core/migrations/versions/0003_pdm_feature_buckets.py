"""pdm: hourly feature buckets per vehicle (the pdm worker's restartable state)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pdm_feature_bucket",
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("vin", "hour"),
    )


def downgrade() -> None:
    op.drop_table("pdm_feature_bucket")
