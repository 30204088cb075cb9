"""initial schema: devices, readings, health samples

Revision ID: 0001
Revises:
Create Date: 2026-11-27 12:24:11.430259
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# SQLite numbers rows itself only for an INTEGER PRIMARY KEY (a BIGINT one stays NULL), so the
# row ids are BIGINT on PostgreSQL and INTEGER (64-bit there anyway) on SQLite.
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "device",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("model_sha256", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_device_device_id"), "device", ["device_id"], unique=True)
    op.create_index(op.f("ix_device_status"), "device", ["status"], unique=False)
    op.create_table(
        "healthsample",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fps", sa.Float(), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=False),
        sa.Column("rss_mb", sa.Float(), nullable=False),
        sa.Column("temperature_c", sa.Float(), nullable=True),
        sa.Column("disk_free_mb", sa.Float(), nullable=False),
        sa.Column("camera_state", sa.String(length=16), nullable=False),
        sa.Column("outbox_depth", sa.Integer(), nullable=False),
        sa.Column("outbox_dropped", sa.Integer(), nullable=False),
        sa.Column("frames_dropped", sa.Integer(), nullable=False),
        sa.Column("uptime_s", sa.Float(), nullable=False),
        sa.Column("stage_latency_ms", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", name="uq_health_device_seq"),
    )
    op.create_index(
        "ix_health_device_observed", "healthsample", ["device_id", "observed_at"], unique=False
    )
    op.create_table(
        "reading",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sign_type", sa.String(length=32), nullable=False),
        sa.Column("gtsrb_class_id", sa.Integer(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(length=8), nullable=True),
        sa.Column("text", sa.String(length=256), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("sources_disagree", sa.Boolean(), nullable=False),
        sa.Column("x1", sa.Float(), nullable=False),
        sa.Column("y1", sa.Float(), nullable=False),
        sa.Column("x2", sa.Float(), nullable=False),
        sa.Column("y2", sa.Float(), nullable=False),
        sa.Column("track_id", sa.BigInteger(), nullable=False),
        sa.Column("frames_seen", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("crop_jpeg", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", name="uq_reading_device_seq"),
    )
    op.create_index(op.f("ix_reading_device_id"), "reading", ["device_id"], unique=False)
    op.create_index(
        "ix_reading_device_observed", "reading", ["device_id", "observed_at"], unique=False
    )
    op.create_index("ix_reading_observed", "reading", ["observed_at"], unique=False)
    op.create_index("ix_reading_position", "reading", ["lat", "lon"], unique=False)
    op.create_index(
        "ix_reading_type_observed", "reading", ["sign_type", "observed_at"], unique=False
    )


def downgrade() -> None:
    """Revert."""
    op.drop_index("ix_reading_type_observed", table_name="reading")
    op.drop_index("ix_reading_position", table_name="reading")
    op.drop_index("ix_reading_observed", table_name="reading")
    op.drop_index("ix_reading_device_observed", table_name="reading")
    op.drop_index(op.f("ix_reading_device_id"), table_name="reading")
    op.drop_table("reading")
    op.drop_index("ix_health_device_observed", table_name="healthsample")
    op.drop_table("healthsample")
    op.drop_index(op.f("ix_device_status"), table_name="device")
    op.drop_index(op.f("ix_device_device_id"), table_name="device")
    op.drop_table("device")
