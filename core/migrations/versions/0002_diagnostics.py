"""diagnostics: DTC episodes, alarms, rule engine state, predictions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:21:36.405858
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alarm",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("raised_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("updated_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("vin", "rule_id", "raised_at", name="uq_alarm_raised"),
    )
    with op.batch_alter_table("alarm", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarm_vin"), ["vin"], unique=False)
        batch_op.create_index(
            "uq_alarm_open",
            ["vin", "rule_id", "late"],
            unique=True,
            postgresql_where=sa.text("state = 'open'"),
            sqlite_where=sa.text("state = 'open'"),
        )

    op.create_table(
        "dtc_episode",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("first_seen", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("decoded", sa.JSON(), nullable=False),
        sa.Column("freeze_frame", sa.JSON(), nullable=False),
        sa.Column("state_data", sa.JSON(), nullable=False),
        sa.Column("updated_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("vin", "code", "episode", name="uq_dtc_episode"),
    )
    with op.batch_alter_table("dtc_episode", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dtc_episode_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_dtc_episode_vin"), ["vin"], unique=False)

    op.create_table(
        "diagnostics_state",
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("updated_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("vin"),
    )
    op.create_table(
        "maintenance_prediction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("component", sa.String(length=32), nullable=False),
        sa.Column("horizon_days", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("alerting", sa.Boolean(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("scored_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("vin", "component", "horizon_days", name="uq_prediction_latest"),
    )
    with op.batch_alter_table("maintenance_prediction", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_maintenance_prediction_vin"), ["vin"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("maintenance_prediction", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_maintenance_prediction_vin"))

    op.drop_table("maintenance_prediction")
    op.drop_table("diagnostics_state")
    with op.batch_alter_table("dtc_episode", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dtc_episode_vin"))
        batch_op.drop_index(batch_op.f("ix_dtc_episode_state"))

    op.drop_table("dtc_episode")
    with op.batch_alter_table("alarm", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_alarm_open",
            postgresql_where=sa.text("state = 'open'"),
            sqlite_where=sa.text("state = 'open'"),
        )
        batch_op.drop_index(batch_op.f("ix_alarm_vin"))

    op.drop_table("alarm")
