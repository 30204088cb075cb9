"""OTA status events and config reports of the devices

Devices report each OTA command's progress (`OtaStatus`) and what they did with a desired config
(`ReportedConfig`); both were decoded and dropped. Staged rollouts need the history of the first
and the newest of the second.

Revision ID: 0006
Revises: 0005 (0005, API sessions, is written in parallel; the two are chained at merge)
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# As in 0001: BIGINT row ids, INTEGER on SQLite (which numbers only an INTEGER PRIMARY KEY).
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "otastatusevent",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("command_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.String(length=1000), nullable=False),
        sa.Column("running_model_version", sa.String(length=64), nullable=True),
        sa.Column("running_model_sha256", sa.String(length=64), nullable=True),
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", name="uq_otastatus_device_seq"),
    )
    op.create_table(
        "configreport",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("config_version", sa.BigInteger(), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", name="uq_configreport_device_seq"),
    )


def downgrade() -> None:
    """Revert."""
    op.drop_table("configreport")
    op.drop_table("otastatusevent")
