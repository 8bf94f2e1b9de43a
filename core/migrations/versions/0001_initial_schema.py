"""initial schema: principals, credentials, vehicles, ECUs

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22 01:29:47.606318
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import core.db

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "principal",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("vin", sa.String(length=17), nullable=True),
        sa.Column("org_ref", sa.String(length=100), nullable=True),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("principal", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_principal_name"), ["name"], unique=True)
        batch_op.create_index(batch_op.f("ix_principal_role"), ["role"], unique=False)
        batch_op.create_index(batch_op.f("ix_principal_vin"), ["vin"], unique=True)

    op.create_table(
        "vehicle",
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("model_year", sa.Integer(), nullable=False),
        sa.Column("region", sa.String(length=16), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("powertrain", sa.String(length=8), nullable=False),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("vin"),
    )
    with op.batch_alter_table("vehicle", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vehicle_model"), ["model"], unique=False)
        batch_op.create_index(batch_op.f("ix_vehicle_model_year"), ["model_year"], unique=False)
        batch_op.create_index(batch_op.f("ix_vehicle_region"), ["region"], unique=False)

    op.create_table(
        "api_credential",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("principal_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["principal_id"],
            ["principal.id"],
            name="fk_api_credential_principal_id",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("api_credential", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_credential_key_id"), ["key_id"], unique=True)
        batch_op.create_index(
            batch_op.f("ix_api_credential_principal_id"), ["principal_id"], unique=False
        )

    op.create_table(
        "ecu",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("ecu_id", sa.String(length=64), nullable=False),
        sa.Column("hardware_id", sa.String(length=64), nullable=False),
        sa.Column("software_version", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["vin"], ["vehicle.vin"], name="fk_ecu_vin_vehicle", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("vin", "ecu_id", name="uq_ecu_vin_ecu_id"),
    )


def downgrade() -> None:

    op.drop_table("ecu")
    with op.batch_alter_table("api_credential", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_credential_principal_id"))
        batch_op.drop_index(batch_op.f("ix_api_credential_key_id"))

    op.drop_table("api_credential")
    with op.batch_alter_table("vehicle", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vehicle_region"))
        batch_op.drop_index(batch_op.f("ix_vehicle_model_year"))
        batch_op.drop_index(batch_op.f("ix_vehicle_model"))

    op.drop_table("vehicle")
    with op.batch_alter_table("principal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_principal_vin"))
        batch_op.drop_index(batch_op.f("ix_principal_role"))
        batch_op.drop_index(batch_op.f("ix_principal_name"))

    op.drop_table("principal")
