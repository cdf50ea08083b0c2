"""service record review and rating, hours requests, certificates, id number

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa
import lastmile.db

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('certificates',
    sa.Column('number', sa.String(length=40), nullable=False),
    sa.Column('volunteer_id', sa.String(length=36), nullable=False),
    sa.Column('content', sa.JSON(), nullable=False),
    sa.Column('issued_at', lastmile.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['volunteer_id'], ['volunteers.id'], ),
    sa.PrimaryKeyConstraint('number')
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_certificates_volunteer_id'), ['volunteer_id'], unique=False)

    op.create_table('hours_requests',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('volunteer_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('hours', sa.Float(), nullable=False),
    sa.Column('service_date', sa.Date(), nullable=False),
    sa.Column('need_id', sa.String(length=36), nullable=True),
    sa.Column('reason', sa.String(length=1000), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('site_id', sa.String(length=128), nullable=False),
    sa.Column('decided_by', sa.String(length=36), nullable=True),
    sa.Column('decision_note', sa.String(length=1000), nullable=True),
    sa.Column('created_at', lastmile.db.UTCDateTime(), nullable=False),
    sa.Column('decided_at', lastmile.db.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['volunteer_id'], ['volunteers.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('hours_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hours_requests_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_hours_requests_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_hours_requests_volunteer_id'), ['volunteer_id'], unique=False)

    with op.batch_alter_table('hours_ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_id', sa.String(length=36), nullable=True))
        batch_op.create_unique_constraint('uq_hours_ledger_request_id', ['request_id'])

    with op.batch_alter_table('service_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reviewed_by', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('reviewed_at', lastmile.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('review', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('rating_stars', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('rating_tags', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('rating_comment', sa.String(length=500), nullable=True))

    with op.batch_alter_table('volunteers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('id_number', sa.String(length=18), nullable=True))

    # ### end Alembic commands ###


def downgrade():
    with op.batch_alter_table('volunteers', schema=None) as batch_op:
        batch_op.drop_column('id_number')

    with op.batch_alter_table('service_records', schema=None) as batch_op:
        batch_op.drop_column('rating_comment')
        batch_op.drop_column('rating_tags')
        batch_op.drop_column('rating_stars')
        batch_op.drop_column('review')
        batch_op.drop_column('reviewed_at')
        batch_op.drop_column('reviewed_by')

    with op.batch_alter_table('hours_ledger', schema=None) as batch_op:
        # WARNING: constraint name is None; this directive will fail as
        batch_op.drop_constraint('uq_hours_ledger_request_id', type_='unique')
        batch_op.drop_column('request_id')

    with op.batch_alter_table('hours_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hours_requests_volunteer_id'))
        batch_op.drop_index(batch_op.f('ix_hours_requests_status'))
        batch_op.drop_index(batch_op.f('ix_hours_requests_site_id'))

    op.drop_table('hours_requests')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_volunteer_id'))

    op.drop_table('certificates')
    # ### end Alembic commands ###
