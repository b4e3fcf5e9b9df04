"""Who asked each logged FAQ answer, and indexes /forget looks people up by.

Revision ID: 0003_forget
Revises: 0002_knowledge
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_forget"
down_revision = "0002_knowledge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "faq_answers",
        sa.Column("user_id", sa.String(160), nullable=False, server_default=""),
    )
    # An escalated answer already names its asker; older answers that were
    # not escalated stay anonymous (/forget finds them by question text).
    op.execute(
        "UPDATE faq_answers SET user_id = ("
        "SELECT e.user_id FROM escalations e WHERE e.answer_id = faq_answers.id LIMIT 1"
        ") WHERE EXISTS ("
        "SELECT 1 FROM escalations e WHERE e.answer_id = faq_answers.id AND e.user_id <> ''"
        ")"
    )
    op.create_index("ix_faq_answers_user_id", "faq_answers", ["user_id"])
    op.create_index("ix_escalations_user_id", "escalations", ["user_id"])
    op.create_index("ix_inbound_events_user_id", "inbound_events", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_inbound_events_user_id", table_name="inbound_events")
    op.drop_index("ix_escalations_user_id", table_name="escalations")
    op.drop_index("ix_faq_answers_user_id", table_name="faq_answers")
    with op.batch_alter_table("faq_answers") as batch:
        batch.drop_column("user_id")
