"""the six service platforms (服务平台) as default categories

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DEFAULTS = [
    ("theory", "理论宣讲"),
    ("education", "教育服务"),
    ("culture", "文化服务"),
    ("science", "科技与科普"),
    ("health", "医疗卫生"),
    ("fitness", "健身体育"),
]


def upgrade():
    categories = sa.table("categories", sa.column("code", sa.String), sa.column("name", sa.String),
                          sa.column("active", sa.Boolean))
    op.bulk_insert(categories, [{"code": code, "name": name, "active": True} for code, name in DEFAULTS])


def downgrade():
    op.execute(sa.text("DELETE FROM categories WHERE code IN ('theory', 'education', 'culture', 'science', "
                       "'health', 'fitness')"))
