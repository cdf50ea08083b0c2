"""Which errors the gateway answers with 503 (retry soon) rather than 500."""
import json

import psycopg2
import psycopg2.errors
import pytest
import sqlalchemy as sa
from nameko.exceptions import ContainerBeingKilled

from werkzeug.routing import RequestRedirect

from gateway.http import database_unavailable, http_exception_response, unexpected_error_response

def sqlalchemy_error_name(sqlstate):
    """The class name under which a service reports a server's error with this SQLSTATE,
    as psycopg2 files it and SQLAlchemy wraps it."""
    driver_error = psycopg2.errors.lookup(sqlstate)("message")
    return type(sa.exc.DBAPIError.instance("SELECT 1", {}, driver_error, psycopg2.Error)).__name__


# And a transaction rolled back as a deadlock's victim or to keep transactions serialisable:
# the same request succeeds when sent again.
@pytest.mark.parametrize("code", ["57P01", "57P03", "53300", "08006", "58030", "40001", "40P01"])
def test_a_server_shutting_down_starting_or_full_is_unavailable(code):
    assert database_unavailable(sqlalchemy_error_name(code))


@pytest.mark.parametrize("code", ["22003", "22012", "23505", "42P01", "42501"])
def test_a_statement_the_server_refuses_is_not(code):
    assert not database_unavailable(sqlalchemy_error_name(code))


def test_lost_connections_and_exhausted_pools_are_unavailable():
    for error_type in ("InterfaceError", "OperationalError", "TimeoutError", "DisconnectionError"):
        assert database_unavailable(error_type)
    assert not database_unavailable("ValueError")


def test_a_redirect_keeps_its_location():
    answer = http_exception_response(RequestRedirect("http://127.0.0.1:8000/console/"))
    assert answer.status_code == 308 and answer.headers["Location"] == "http://127.0.0.1:8000/console/"
    assert answer.json == {"location": "http://127.0.0.1:8000/console/"}


def test_a_request_reaching_a_stopping_gateway_is_unavailable_not_an_error():
    response = unexpected_error_response(ContainerBeingKilled(), "list_offers")
    assert response.status_code == 503
    assert json.loads(response.get_data())["error"]["code"] == "service_unavailable"
    assert unexpected_error_response(RuntimeError("a bug"), "list_offers").status_code == 500
