"""create items

Revision ID: 0001
Revises:
Create Date: 2026-01-01 00:00:00

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    items = op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True),  # serial on PostgreSQL
        sa.Column("name", sa.Text, nullable=False),
    )
    op.bulk_insert(items, [{"name": "apple"}, {"name": "banana"}, {"name": "cherry"}])


def downgrade():
    op.drop_table("items")
