"""Errors that cross the RPC boundary intact.

A service raises one of these; nameko serialises it, and because each class is
registered with ``deserialize_to_instance`` the gateway receives the same class
back and turns it into the JSON error body of the public contract.
"""
import json

from nameko.exceptions import deserialize_to_instance


class LastmileError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message, details=None):
        # nameko turns every argument that is not a string into its str(): the
        # details travel as JSON so that numbers and lists arrive as they were.
        if isinstance(details, str):
            details = json.loads(details)
        super().__init__(message, json.dumps(details or {}, ensure_ascii=False, default=str))
        self.message = message
        self.details = details or {}

    def to_body(self):
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


@deserialize_to_instance
class InvalidInput(LastmileError):
    status = 400
    code = "invalid_input"


@deserialize_to_instance
class Unauthorized(LastmileError):
    status = 401
    code = "unauthorized"


@deserialize_to_instance
class Forbidden(LastmileError):
    status = 403
    code = "forbidden"


@deserialize_to_instance
class NotFound(LastmileError):
    status = 404
    code = "not_found"


@deserialize_to_instance
class Conflict(LastmileError):
    status = 409
    code = "conflict"


@deserialize_to_instance
class NotReady(LastmileError):
    """A fact this service needs has not arrived yet (events are eventually
    consistent); an event handler that raises it is retried later."""
    status = 409
    code = "not_ready"


class ServiceUnavailable(LastmileError):
    status = 503
    code = "service_unavailable"


class ServiceTimeout(LastmileError):
    status = 504
    code = "service_timeout"


EXPECTED = (InvalidInput, Unauthorized, Forbidden, NotFound, Conflict, NotReady)
