"""Staged rollouts: the rollout table, its audit log and outbox; what the driver reads

OTA status events keep the rollout id a device reported, and health samples the shadow
comparison of a probation, so the rollout driver can judge a stage from stored rows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 19:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Apply."""
    op.add_column("otastatusevent", sa.Column("rollout_id", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_otastatus_rollout_received", "otastatusevent", ["rollout_id", "received_at"]
    )
    op.add_column(
        "healthsample", sa.Column("shadow_previous_model", sa.String(length=64), nullable=True)
    )
    for column in ("shadow_frames_compared", "shadow_tracks_compared", "shadow_tracks_agreeing"):
        op.add_column("healthsample", sa.Column(column, sa.BigInteger(), nullable=True))
    op.create_table(
        "rollout",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model_name", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("target_path", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("observed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rollout_status", "rollout", ["status"])
    op.create_table(
        "rollout_event",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("rollout_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("device_ids", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollout.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rollout_event_rollout", "rollout_event", ["rollout_id", "id"])
    op.create_table(
        "rollout_action",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("rollout_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollout.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rollout_action_pending", "rollout_action", ["done_at", "id"])
    op.create_index("ix_rollout_action_rollout_id", "rollout_action", ["rollout_id"])


def downgrade() -> None:
    """Revert."""
    op.drop_table("rollout_action")
    op.drop_table("rollout_event")
    op.drop_table("rollout")
    for column in (
        "shadow_tracks_agreeing",
        "shadow_tracks_compared",
        "shadow_frames_compared",
        "shadow_previous_model",
    ):
        op.drop_column("healthsample", column)
    op.drop_index("ix_otastatus_rollout_received", table_name="otastatusevent")
    op.drop_column("otastatusevent", "rollout_id")
