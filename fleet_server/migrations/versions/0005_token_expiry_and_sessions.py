"""token expiry, bootstrap kind and issuer; server-side dashboard sessions

Tokens get ``kind`` (``bootstrap`` or ``issued``: a new bootstrap token revokes the previous
one, so the existing one, by its name, is marked ``bootstrap``), ``expires_at`` and
``created_by_id``. ``dashboardsession`` holds the dashboard's logins (the hash of each session
id), which end at logout, at expiry and with their token.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    # Batch mode: SQLite (the demo's store) can add a foreign key only by rebuilding the table.
    with op.batch_alter_table("apitoken") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), server_default="issued", nullable=False)
        )
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("created_by_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_apitoken_created_by_id_apitoken", "apitoken", ["created_by_id"], ["id"]
        )
    op.execute("UPDATE apitoken SET kind = 'bootstrap' WHERE name = 'bootstrap-admin'")
    op.create_table(
        "dashboardsession",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["token_id"], ["apitoken.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_dashboardsession_session_hash"), "dashboardsession", ["session_hash"], unique=True
    )
    op.create_index(
        op.f("ix_dashboardsession_token_id"), "dashboardsession", ["token_id"], unique=False
    )


def downgrade() -> None:
    """Revert."""
    op.drop_index(op.f("ix_dashboardsession_token_id"), table_name="dashboardsession")
    op.drop_index(op.f("ix_dashboardsession_session_hash"), table_name="dashboardsession")
    op.drop_table("dashboardsession")
    with op.batch_alter_table("apitoken") as batch:
        batch.drop_constraint("fk_apitoken_created_by_id_apitoken", type_="foreignkey")
        batch.drop_column("created_by_id")
        batch.drop_column("expires_at")
        batch.drop_column("kind")
