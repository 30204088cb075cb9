"""drop the readings' device-id index: (device_id, seq) and (device_id, observed_at) cover it

Every reading paid for a sixth index that no query needed: both composite indexes start with
the device id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 23:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    op.drop_index("ix_reading_device_id", table_name="reading")


def downgrade() -> None:
    """Revert."""
    op.create_index("ix_reading_device_id", "reading", ["device_id"], unique=False)
