"""Slack installations (OAuth), the workspaces served, and OAuth states.

Revision ID: 0007_slack_installs
Revises: 0006_team
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_slack_installs"
# Follows 0006_team once that revision is merged; 0004 is the newest one here.
down_revision = "0006_team"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "slack_installations",
        sa.Column("id", Id, primary_key=True),
        sa.Column("enterprise_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("team_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("user_id", sa.String(32), nullable=False, server_default=""),
        sa.Column(
            "is_enterprise_install", sa.Boolean, nullable=False, server_default=sa.text("false")
        ),
        sa.Column("bot_user_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("bot_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("secrets", sa.Text, nullable=False),
        sa.Column("installed_at", Stamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_slack_installations"),
        sa.UniqueConstraint(
            "enterprise_id", "team_id", "user_id", name="uq_slack_installations_installation"
        ),
    )
    op.create_index(
        "ix_slack_installations_latest",
        "slack_installations",
        ["enterprise_id", "team_id", "installed_at"],
    )
    op.create_table(
        "slack_workspaces",
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("enterprise_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("uninstalled_at", Stamp),
        sa.Column("updated_at", Stamp, nullable=False),
        sa.PrimaryKeyConstraint("team_id", name="pk_slack_workspaces"),
    )
    op.create_index("ix_slack_workspaces_uninstalled", "slack_workspaces", ["uninstalled_at"])
    op.create_table(
        "slack_oauth_states",
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("expires_at", Stamp, nullable=False),
        sa.PrimaryKeyConstraint("state", name="pk_slack_oauth_states"),
    )


def downgrade() -> None:
    op.drop_table("slack_oauth_states")
    op.drop_index("ix_slack_workspaces_uninstalled", table_name="slack_workspaces")
    op.drop_table("slack_workspaces")
    op.drop_index("ix_slack_installations_latest", table_name="slack_installations")
    op.drop_table("slack_installations")
