"""The statements every service shares, on a real PostgreSQL: a row made or locked in
one statement, a page with its total in one statement, and writes outside a transaction."""
import eventlet
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from lastmile import db


class Base(DeclarativeBase):
    pass


class Counter(Base):
    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    count: Mapped[int] = mapped_column(sa.Integer)


@pytest.fixture
def engine(infrastructure):
    engine = db.make_engine("helpertest")
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    try:
        yield engine
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


def test_locked_row_makes_a_missing_row_and_returns_an_existing_one_unchanged(engine):
    Session = sessionmaker(engine)
    with Session.begin() as session:
        row = db.locked_row(session, Counter, name="visits", count=0)
        assert (row.name, row.count) == ("visits", 0)
        row.count = 5
    with Session.begin() as session:
        row = db.locked_row(session, Counter, name="visits", count=0)
        assert row.count == 5  # the values only make a missing row


def test_locked_row_holds_others_off_until_the_transaction_ends(engine):
    """Twenty increments at once, each creating the row if it is missing: none fails
    and none is lost, because each waits for the lock of the one before."""
    Session = sessionmaker(engine)

    def increment(_):
        with Session.begin() as session:
            row = db.locked_row(session, Counter, name="clicks", count=0)
            seen = row.count
            eventlet.sleep(0.005)  # another increment runs meanwhile, if it can
            row.count = seen + 1

    list(eventlet.GreenPool(8).imap(increment, range(20)))
    with Session() as session:
        assert session.get(Counter, "clicks").count == 20


def test_paged_gives_a_page_and_the_total_of_all_pages(engine):
    Session = sessionmaker(engine)
    with Session.begin() as session:
        session.add_all(Counter(name=f"c{i:02d}", count=i) for i in range(7))
    stmt = sa.select(Counter).where(Counter.count >= 1)  # six rows
    with Session() as session:
        rows, total = db.paged(session, stmt, (Counter.name,), page=2, size=4)
        assert [row.name for row, in rows] == ["c05", "c06"] and total == 6
        assert db.paged(session, stmt, (Counter.name,), page=3, size=4) == ([], 6)  # past the end
        assert db.paged(session, stmt.where(Counter.count > 99), (Counter.name,), page=1, size=4) == ([], 0)


def test_an_autocommit_engine_writes_at_once_and_leaves_the_main_pool_transactional(engine):
    autocommit_engine = db.make_engine("helpertest", pool_size=1, autocommit=True)
    try:
        with sessionmaker(autocommit_engine)() as session:
            session.execute(sa.insert(Counter).values(name="now", count=1))
            # Seen from another connection before this session closes: already committed.
            with engine.connect() as other:
                assert other.execute(sa.select(Counter.count).where(Counter.name == "now")).scalar() == 1
        with sessionmaker(engine)() as session:  # the main pool's connections keep transactions
            session.execute(sa.insert(Counter).values(name="later", count=1))
            session.rollback()
            assert session.get(Counter, "later") is None
    finally:
        autocommit_engine.dispose()
