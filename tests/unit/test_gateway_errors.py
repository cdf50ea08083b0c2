"""Which database errors the gateway answers with 503 (retry soon) rather than 500."""
import pytest

from werkzeug.routing import RequestRedirect

from gateway.http import database_unavailable, http_exception_response

PG8000 = "(pg8000.exceptions.DatabaseError) {{'S': 'FATAL', 'V': 'FATAL', 'C': '{code}', 'M': 'message'}}"


@pytest.mark.parametrize("code", ["57P01", "57P03", "53300", "08006", "58030"])
def test_a_server_shutting_down_starting_or_full_is_unavailable(code):
    assert database_unavailable("DatabaseError", PG8000.format(code=code))
    assert database_unavailable("ProgrammingError", PG8000.format(code=code))  # pg8000's "too many clients"


@pytest.mark.parametrize("code", ["22003", "22012", "23505", "42P01", "40001"])
def test_a_statement_the_server_refuses_is_not(code):
    assert not database_unavailable("DatabaseError", PG8000.format(code=code))
    assert not database_unavailable("ProgrammingError", PG8000.format(code=code))


def test_lost_connections_and_exhausted_pools_are_unavailable_whatever_their_text():
    for error_type in ("InterfaceError", "OperationalError", "TimeoutError", "DisconnectionError"):
        assert database_unavailable(error_type, "network error")
    assert not database_unavailable("ValueError", "'C': '57P01'")


def test_a_redirect_keeps_its_location():
    answer = http_exception_response(RequestRedirect("http://127.0.0.1:8000/console/"))
    assert answer.status_code == 308 and answer.headers["Location"] == "http://127.0.0.1:8000/console/"
    assert answer.json == {"location": "http://127.0.0.1:8000/console/"}
