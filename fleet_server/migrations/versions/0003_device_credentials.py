"""device broker credentials

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 12:34:59.602952
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    op.add_column("device", sa.Column("broker_password_hash", sa.String(length=256), nullable=True))


def downgrade() -> None:
    """Revert."""
    op.drop_column("device", "broker_password_hash")
