"""The OpenAPI document: valid OpenAPI 3, exactly the routes the gateway serves,
made from the schemas the gateway and the services validate with; and the
Swagger UI assets, served only from the pinned bundle."""
import re
import warnings

import pytest
from nameko.web.handlers import HttpRequestHandler
from openapi_spec_validator import validate
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway import openapi, schemas as views
from gateway.service import GatewayService
from lastmile.auth import Actor
from lastmile.errors import InvalidInput, NotFound
from services.dispatch import schemas as dispatch_schemas, service as dispatch_service
from services.needs import schemas as needs_schemas
from services.ratings import schemas as ratings_schemas, service as ratings_service

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


@pytest.fixture(scope="module")
def document():
    with warnings.catch_warnings():
        # apispec warns when two schemas resolve to one component name.
        warnings.simplefilter("error", UserWarning)
        return openapi.build(GatewayService)


def operations(document):
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method.upper(), path, op


def served_routes():
    """(method, OpenAPI path) of every HTTP entrypoint nameko would serve."""
    routes = set()
    for name in dir(GatewayService):
        for entrypoint in getattr(getattr(GatewayService, name, None), "nameko_entrypoints", ()):
            if isinstance(entrypoint, HttpRequestHandler):
                path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", entrypoint.url)
                routes.add((entrypoint.method.upper(), path))
    return routes


def test_the_document_is_valid_openapi_3(document):
    assert document["openapi"] == "3.0.3"
    validate(document)


def test_it_lists_exactly_the_routes_the_gateway_serves(document):
    documented = {(method, path) for method, path, _ in operations(document)}
    served = served_routes()
    assert len(served) > 60
    assert documented == served, (sorted(served - documented), sorted(documented - served))


def test_each_operation_has_an_id_a_known_tag_and_a_success_answer(document):
    tags = {tag["name"] for tag in document["tags"]}
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    for method, path, op in operations(document):
        assert set(op["tags"]) <= tags, (method, path)
        assert any(code.startswith("2") for code in op["responses"]), (method, path)


def test_signed_in_routes_ask_for_a_bearer_token_and_say_401(document):
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for method, path, op in operations(document):
        if op["security"]:
            assert op["security"] == [{"bearerAuth": []}]
            assert "401" in op["responses"], (method, path)
        elif op["operationId"] != "token":  # a wrong password is 401 too
            assert "401" not in op["responses"], (method, path)
    public = {(m, p) for m, p, op in operations(document) if not op["security"]}
    assert ("POST", "/api/v1/auth/token") in public and ("GET", "/api/v1/sites") in public
    assert ("GET", "/api/v1/needs") not in public


def test_errors_carry_the_error_body(document):
    responses = document["components"]["responses"]
    for method, path, op in operations(document):
        for code, response in op["responses"].items():
            if int(code) >= 400 and not path.startswith("/open311/") and path != "/readyz":
                name = response["$ref"].rsplit("/", 1)[1]
                schema = responses[name]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code)
    error = document["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"code", "message", "details"}
    assert "Retry-After" in responses["TooManyRequests"]["headers"]


def test_a_route_with_a_body_documents_the_services_schema_and_its_errors(document):
    submit = document["paths"]["/api/v1/needs"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NeedCreate"}
    assert {"201", "200", "400", "401", "403", "409", "413", "415", "429", "503", "504"} <= set(submit["responses"])
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in submit["parameters"])
    need = document["components"]["schemas"]["NeedCreate"]
    assert need["additionalProperties"] is False
    assert {"title", "site_id", "address", "contact_phone", "beneficiary_group", "beneficiaries"} <= set(
        need["required"])
    assert need["properties"]["contact_phone"]["pattern"] == "^1[3-9][0-9]{9}$"
    assert need["properties"]["site_id"]["pattern"].startswith("^[a-z]")
    # A PATCH is loaded partially: nothing is required.
    patch = document["paths"]["/api/v1/volunteers/{volunteer_id}"]["patch"]["requestBody"]
    ref = patch["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "required" not in document["components"]["schemas"][ref]
    # An optional body is documented as optional.
    assert document["paths"]["/api/v1/needs/{need_id}/approve"]["post"]["requestBody"]["required"] is False


def test_queries_and_path_parameters_are_documented(document):
    listing = document["paths"]["/api/v1/needs"]["get"]
    names = {p["name"] for p in listing["parameters"] if p["in"] == "query"}
    assert {"status", "site_id", "category", "channel", "q", "page", "page_size"} <= names
    page_size = next(p for p in listing["parameters"] if p["name"] == "page_size")
    assert page_size["schema"]["maximum"] == 100
    stats = {p["name"] for p in document["paths"]["/api/v1/stats"]["get"]["parameters"]}
    assert {"site_id", "from", "to"} <= stats
    decide = document["paths"]["/api/v1/hours-requests/{request_id}/{decision}"]["post"]["parameters"]
    assert next(p for p in decide if p["name"] == "decision")["schema"]["enum"] == ["approve", "refuse"]
    certificate = document["paths"]["/api/v1/volunteers/{volunteer_id}/certificate"]["get"]
    assert {"json", "pdf"} <= set(next(p for p in certificate["parameters"] if p["name"] == "format")["schema"]["enum"])
    assert "application/pdf" in certificate["responses"]["200"]["content"]


def test_the_gateway_validates_with_the_services_own_schemas():
    routes = {name: meta for name, meta, _ in openapi.routes(GatewayService)}
    assert routes["submit_need"]["body"] is needs_schemas.NeedCreateSchema
    assert routes["list_needs"]["query"] is needs_schemas.NeedQuerySchema
    assert routes["dispatch_need"]["body"] is dispatch_schemas.ManualDispatchSchema
    assert routes["rate_need"]["body"] is ratings_schemas.RatingSchema
    assert routes["stats"]["query"] is ratings_schemas.StatsQuerySchema
    # The services validate with these very classes.
    assert dispatch_service.ManualDispatchSchema is dispatch_schemas.ManualDispatchSchema
    assert dispatch_service.OfferQuerySchema is dispatch_schemas.OfferQuerySchema
    assert ratings_service.RatingSchema is ratings_schemas.RatingSchema
    assert ratings_service.StatsQuerySchema is ratings_schemas.StatsQuerySchema


class FakeAccounts:
    def authenticate(self, header):
        return Actor(id="staff-1", role="staff", site_id="qiongshan")


class NoRpcGateway:
    accounts = FakeAccounts()

    def rpc(self, *args, **kwargs):
        raise AssertionError(f"the gateway called {args[:2]} with input it should have refused")


def request_with(body=None, query=None):
    builder = EnvironBuilder(method="POST", json=body, query_string=query or {},
                             headers={"Authorization": "Bearer x"})
    return Request(builder.get_environ())


def test_bad_input_is_refused_before_any_rpc():
    with pytest.raises(InvalidInput) as caught:
        GatewayService.reject_need(NoRpcGateway(), request_with({"reason": ""}), need_id="n1")
    assert "reason" in caught.value.details
    with pytest.raises(InvalidInput) as caught:
        GatewayService.list_needs(NoRpcGateway(), request_with(query={"page_size": "101"}))
    assert "page_size" in caught.value.details
    with pytest.raises(InvalidInput) as caught:
        GatewayService.dispatch_need(NoRpcGateway(), request_with({"volunteer_id": "v", "colour": "red"}),
                                     need_id="n1")
    assert "colour" in caught.value.details


def test_valid_input_reaches_the_service_unchanged():
    sent = {}

    class Gateway(NoRpcGateway):
        def rpc(self, service, method, *args):
            sent[method] = args
            return {"id": "n1"}

    body = {"reason": "重复提交"}
    GatewayService.reject_need(Gateway(), request_with(body), need_id="n1")
    assert sent["reject_need"][1:] == ("n1", body)
    # An optional body may be left out.
    GatewayService.approve_need(Gateway(), request_with(), need_id="n1")
    assert sent["approve_need"][1:] == ("n1", {})


def test_the_docs_page_refers_only_to_the_gateways_own_files():
    page = openapi.DOCS_PAGE
    references = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert references and all(ref.startswith("/docs/") for ref in references)
    assert not re.search(r"https?://|//[a-z]", page.replace("http-equiv", ""))
    for ref in references:
        assert openapi.asset(ref.removeprefix("/docs/")).status_code == 200
    assert "validatorUrl: null" in page
    policy = openapi.docs_page().headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy


@pytest.mark.parametrize("name", [
    "../__init__.py", "../../swagger_ui_bundle/__init__.py", "/etc/passwd", "..%2f__init__.py", "",
    "swagger-initializer.js", "index.html", "no-such-file.js", "vendor/../swagger-ui.css/..",
])
def test_only_the_bundles_files_are_served(name):
    with pytest.raises(NotFound):
        openapi.asset(name)


def test_response_schemas_are_documentation_only_marshmallow_schemas():
    assert set(views.ErrorSchema().fields) == {"error"}
    assert set(views.NeedPage().fields) == {"items", "total", "page", "page_size"}
    assert set(views.SiteList().fields) == {"items", "total"}
