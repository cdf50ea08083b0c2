"""The gateway: Lastmile's public HTTP contract (DESIGN.md §4) on nameko's web
server. Routes authenticate, check the caller's role and hand the work to the
owning service by RPC; services decide ownership and site scope."""
from pathlib import Path

import eventlet
from kombu import Connection
from nameko.rpc import RpcProxy
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.wrappers import Response

from gateway.accounts import (
    AccountCreateSchema, ApiKeySchema, GatewayStore, PasswordChangeSchema, RegisterSchema, TokenSchema,
)
from gateway.certificates import render_pdf
from gateway.http import API, ApiRoute, call, json_response, query_of, read_json
from gateway.limits import check_rate
from gateway.observability import exposition
from gateway import openapi, webconsole
from gateway import schemas as views
from gateway.events import EventRoutes
from gateway.open311 import Open311Routes
from gateway.models import MESSAGING, Base
from lastmile import config
from lastmile.errors import Forbidden, InvalidInput, LastmileError, NotFound
from lastmile.validation import load
from services.dispatch.schemas import DeclineSchema, ManualDispatchSchema, OfferQuerySchema
from services.needs.schemas import (
    ApproveSchema, BeneficiaryCountSchema, BeneficiaryEntrySchema, CategoryCreateSchema, NeedCreateSchema,
    NeedQuerySchema, ProjectCreateSchema, ProjectQuerySchema, ProjectUpdateSchema, ReasonSchema, RejectSchema,
    SiteCreateSchema, SiteUpdateSchema,
)
from services.notifications.schemas import NotificationQuerySchema, PreferencesSchema
from services.ratings.schemas import (
    FollowUpQuerySchema, RatingQuerySchema, RatingSchema, ResolveSchema, StatsQuerySchema,
)
from services.volunteers.schemas import (
    AssignmentQuerySchema, CheckInSchema, CheckOutSchema, DecisionSchema, HoursRequestSchema, RecordQuerySchema,
    StatusQuerySchema, TeamCreateSchema, TeamMemberSchema, TeamQuerySchema, VolunteerCreateSchema,
    VolunteerUpdateSchema,
)

MIGRATIONS = Path(__file__).parent / "migrations"
BACKENDS = ("needs", "dispatch", "volunteers", "ratings", "notifications")
ANYONE = None
STAFF = ("staff", "admin")


def route(method, path, roles=ANYONE, public=False, status=200, limited=True,
          body=None, body_required=True, query=None, response=None):
    """Declare a route: who may call it (``public``, or any signed-in caller, or
    only ``roles``), whether request-rate limits apply, and its answer's status.

    ``body`` and ``query`` are the marshmallow schemas the owning service validates
    with: the gateway validates with them too before any RPC (a PATCH body partially),
    so the OpenAPI document made from them (gateway/openapi.py) is what is enforced.
    ``body_required=False`` lets the body be empty. ``response`` documents the answer
    (gateway/schemas.py)."""

    def decorate(handler):
        def entrypoint(self, request, **path_values):
            actor = None
            if limited:
                check_rate(request.remote_addr)
            if not public:
                actor = self.accounts.authenticate(request.headers.get("Authorization"))
                if limited:
                    check_rate(None, actor.id)
                if roles is not ANYONE and actor.role not in roles:
                    raise Forbidden(f"This needs one of the roles: {', '.join(roles)}")
            if query is not None:
                load(query(), query_of(request))
            if body is not None:
                load(body(), read_json(request, required=body_required), partial=method == "PATCH")
            result = handler(self, request, actor, **path_values)
            if isinstance(result, Response):
                return result
            if isinstance(result, tuple):
                return json_response(result[0], result[1])
            return json_response(status, result)

        entrypoint.__name__ = handler.__name__
        entrypoint.__doc__ = handler.__doc__
        entrypoint.lastmile_route = {"method": method, "path": path, "roles": roles, "public": public,
                                     "status": status, "limited": limited, "body": body,
                                     "body_required": body_required, "query": query, "response": response}
        return ApiRoute.decorator(method, path)(entrypoint)

    return decorate


class NotFoundRoute(NotFound):
    def __init__(self):
        super().__init__("No such route")


def backend(service):
    """An RPC proxy whose requests expire in the service's queue when the gateway stops
    waiting (504): a request left there while the service is down or swamped is not
    carried out later, unseen by the caller who was told it timed out."""
    return RpcProxy(service, expiration=config.get_float("LASTMILE_RPC_TIMEOUT"))


class GatewayService(Open311Routes, EventRoutes):
    name = "gateway"

    accounts = GatewayStore(Base.metadata, MIGRATIONS, MESSAGING)
    needs = backend("needs")
    dispatch = backend("dispatch")
    volunteers = backend("volunteers")
    ratings = backend("ratings")
    notifications = backend("notifications")

    def rpc(self, service, method, *args, **kwargs):
        return call(getattr(self, service), service, method, *args, **kwargs)

    # ---- operations ---------------------------------------------------------------

    @route("GET", "/healthz", public=True, limited=False, response=views.HealthView)
    def healthz(self, request, actor):
        return {"status": "ok"}

    @route("GET", "/metrics", public=True, limited=False)
    def metrics(self, request, actor):
        """Prometheus text: the gateway's requests and RPC calls, and each running
        service's events published and consumed."""
        pool = eventlet.GreenPool()

        def samples(name):
            try:
                return name, self.rpc(name, "metrics", timeout=1)
            except LastmileError:
                return name, []

        by_service = dict(pool.imap(samples, BACKENDS))
        return Response(exposition(by_service), content_type=CONTENT_TYPE_LATEST)

    @route("GET", "/readyz", public=True, limited=False, response=views.ReadyView)
    def readyz(self, request, actor):
        """200 only when the broker and every service answer."""
        checks = {"broker": self._check_broker()}
        pool = eventlet.GreenPool()
        for name, outcome in zip(BACKENDS, pool.imap(self._check_service, BACKENDS)):
            checks[name] = outcome
        missing = sorted(name for name, outcome in checks.items() if outcome != "ok")
        if missing:
            return 503, {"status": "unavailable", "missing": missing, "checks": checks}
        return {"status": "ready", "checks": checks}

    def _check_broker(self):
        try:
            with Connection(config.get("LASTMILE_AMQP_URI"), connect_timeout=1) as conn:
                conn.ensure_connection(max_retries=1, timeout=1)
            return "ok"
        except Exception as exc:
            return f"unreachable: {exc.__class__.__name__}"

    def _check_service(self, name):
        try:
            self.rpc(name, "health", timeout=1.5)
            return "ok"
        except LastmileError as exc:
            return exc.code

    @route("GET", "/api/openapi.json", public=True)
    def openapi_document(self, request, actor):
        """This document: every route with its schemas and its errors (OpenAPI 3.0.3)."""
        return openapi.document(type(self))

    @route("GET", "/docs", public=True)
    def docs(self, request, actor):
        """Swagger UI for this document, served wholly by the gateway."""
        return openapi.docs_page()

    @route("GET", "/docs/<path:filename>", public=True)
    def docs_asset(self, request, actor, filename):
        """A file of Swagger UI (the pinned swagger-ui-bundle)."""
        return openapi.asset(filename)

    # ---- the web console (static files, no service call: not rate-limited) ------------

    @route("GET", "/", public=True, limited=False)
    def home(self, request, actor):
        """The web console, at the gateway's root too."""
        return webconsole.page()

    @route("GET", webconsole.PATH, public=True, limited=False)
    def console(self, request, actor):
        """The web console for residents, volunteers and staff, served wholly by the gateway."""
        return webconsole.page()

    @route("GET", webconsole.PATH + "/<path:filename>", public=True, limited=False)
    def console_asset(self, request, actor, filename):
        """A file of the web console (scripts, styles, its pinned chart library)."""
        return webconsole.asset(filename)

    # ---- accounts -------------------------------------------------------------------

    @route("POST", API + "/auth/register", public=True, status=201, body=RegisterSchema, response=views.UserView)
    def register(self, request, actor):
        data = load(RegisterSchema(), read_json(request))
        return self.accounts.register(data)

    @route("POST", API + "/auth/token", public=True, body=TokenSchema, response=views.TokenView)
    def token(self, request, actor):
        data = load(TokenSchema(), read_json(request))
        return self.accounts.issue_token(data["phone"], data["password"])

    @route("POST", API + "/accounts", roles=("admin",), status=201, body=AccountCreateSchema, response=views.UserView)
    def create_account(self, request, actor):
        data = load(AccountCreateSchema(), read_json(request))
        self.accounts.require_site_for(data["role"], data["site_id"])
        if data["site_id"]:
            self.rpc("needs", "get_site", data["site_id"])
        site_id = data.pop("site_id")
        return self.accounts.register(data, site_id=site_id)

    @route("POST", API + "/auth/password", body=PasswordChangeSchema, response=views.TokenView)
    def change_password(self, request, actor):
        """A new password; every token issued before it stops working."""
        data = load(PasswordChangeSchema(), read_json(request))
        return self.accounts.change_password(actor, data)

    @route("POST", API + "/open311/keys", roles=("admin",), status=201, body=ApiKeySchema, response=views.ApiKeyView)
    def issue_api_key(self, request, actor):
        """A key for another system to file needs through Open311; shown only now."""
        data = load(ApiKeySchema(), read_json(request))
        return self.accounts.issue_api_key(actor, data["name"])

    @route("GET", API + "/open311/keys", roles=("admin",), response=views.ApiKeyList)
    def list_api_keys(self, request, actor):
        """Every key issued, revoked or not; the keys themselves were shown once only."""
        items = self.accounts.api_keys()
        return {"items": items, "total": len(items)}

    @route("POST", API + "/open311/keys/<key_id>/revoke", roles=("admin",), response=views.ApiKeyRecordView)
    def revoke_api_key(self, request, actor, key_id):
        """The key files nothing from now on (a leaked key, a system retired)."""
        return self.accounts.revoke_api_key(key_id)

    @route("GET", API + "/me", response=views.UserView)
    def me(self, request, actor):
        return self.accounts.account(actor.id)

    # ---- reference data ---------------------------------------------------------------

    @route("GET", API + "/sites", public=True, response=views.SiteList)
    def list_sites(self, request, actor):
        items = self.rpc("needs", "list_sites")
        return {"items": items, "total": len(items)}

    @route("POST", API + "/sites", roles=("admin",), status=201, body=SiteCreateSchema, response=views.SiteView)
    def create_site(self, request, actor):
        return self.rpc("needs", "create_site", actor.to_dict(), read_json(request))

    @route("GET", API + "/sites/<site_id>", public=True, response=views.SiteView)
    def get_site(self, request, actor, site_id):
        return self.rpc("needs", "get_site", site_id)

    @route("PATCH", API + "/sites/<site_id>", roles=STAFF, body=SiteUpdateSchema, response=views.SiteView)
    def update_site(self, request, actor, site_id):
        return self.rpc("needs", "update_site", actor.to_dict(), site_id, read_json(request))

    @route("GET", API + "/categories", public=True, response=views.CategoryList)
    def list_categories(self, request, actor):
        items = self.rpc("needs", "list_categories")
        return {"items": items, "total": len(items)}

    @route("POST", API + "/categories", roles=("admin",), status=201, body=CategoryCreateSchema,
           response=views.CategoryView)
    def create_category(self, request, actor):
        return self.rpc("needs", "create_category", actor.to_dict(), read_json(request))

    @route("GET", API + "/projects", public=True, query=ProjectQuerySchema, response=views.ProjectList)
    def list_projects(self, request, actor):
        items = self.rpc("needs", "list_projects", query_of(request))
        return {"items": items, "total": len(items)}

    @route("POST", API + "/projects", roles=STAFF, status=201, body=ProjectCreateSchema, response=views.ProjectView)
    def create_project(self, request, actor):
        return self.rpc("needs", "create_project", actor.to_dict(), read_json(request))

    @route("PATCH", API + "/projects/<project_id>", roles=STAFF, body=ProjectUpdateSchema, response=views.ProjectView)
    def update_project(self, request, actor, project_id):
        return self.rpc("needs", "update_project", actor.to_dict(), project_id, read_json(request))

    @route("GET", API + "/sites/<site_id>/beneficiaries", roles=("collector", "staff", "admin"),
           response=views.BeneficiariesView)
    def site_beneficiaries(self, request, actor, site_id):
        return self.rpc("needs", "beneficiaries", actor.to_dict(), site_id)

    @route("PUT", API + "/sites/<site_id>/beneficiaries", roles=("collector", "staff", "admin"),
           body=BeneficiaryCountSchema, response=views.BeneficiariesView)
    def set_beneficiary_count(self, request, actor, site_id):
        return self.rpc("needs", "set_beneficiary_count", actor.to_dict(), site_id, read_json(request))

    @route("POST", API + "/sites/<site_id>/beneficiaries/entries", roles=("collector", "staff", "admin"), status=201,
           body=BeneficiaryEntrySchema, response=views.BeneficiaryEntryView)
    def add_beneficiary_entry(self, request, actor, site_id):
        return self.rpc("needs", "add_beneficiary_entry", actor.to_dict(), site_id, read_json(request))

    # ---- needs (点单) -------------------------------------------------------------------

    @route("POST", API + "/needs", roles=("resident", "collector", "staff", "admin"), status=201,
           body=NeedCreateSchema, response=views.NeedView)
    def submit_need(self, request, actor):
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 128:
            raise InvalidInput("Idempotency-Key must be 1 to 128 characters", {"Idempotency-Key": ["Bad length."]})
        result = self.rpc("needs", "submit_need", actor.to_dict(), read_json(request), key)
        return (201 if result["created"] else 200), result["need"]

    @route("GET", API + "/needs", query=NeedQuerySchema, response=views.NeedPage)
    def list_needs(self, request, actor):
        return self.rpc("needs", "list_needs", actor.to_dict(), query_of(request))

    @route("GET", API + "/needs/<need_id>", response=views.NeedView)
    def get_need(self, request, actor, need_id):
        return self.rpc("needs", "get_need", actor.to_dict(), need_id)

    @route("POST", API + "/needs/<need_id>/approve", roles=STAFF, body=ApproveSchema, body_required=False,
           response=views.NeedView)
    def approve_need(self, request, actor, need_id):
        return self.rpc("needs", "approve_need", actor.to_dict(), need_id, read_json(request, required=False))

    @route("POST", API + "/needs/<need_id>/reject", roles=STAFF, body=RejectSchema, response=views.NeedView)
    def reject_need(self, request, actor, need_id):
        return self.rpc("needs", "reject_need", actor.to_dict(), need_id, read_json(request))

    @route("POST", API + "/needs/<need_id>/cancel", body=ReasonSchema, body_required=False, response=views.NeedView)
    def cancel_need(self, request, actor, need_id):
        return self.rpc("needs", "cancel_need", actor.to_dict(), need_id, read_json(request, required=False))

    # ---- dispatch (派单, 接单) ------------------------------------------------------------

    @route("GET", API + "/needs/<need_id>/order", response=views.OrderView)
    def get_order(self, request, actor, need_id):
        return self.rpc("dispatch", "get_order", actor.to_dict(), need_id)

    @route("POST", API + "/needs/<need_id>/dispatch", roles=STAFF, status=201, body=ManualDispatchSchema,
           response=views.OfferView)
    def dispatch_need(self, request, actor, need_id):
        return self.rpc("dispatch", "dispatch_manually", actor.to_dict(), need_id, read_json(request))

    @route("GET", API + "/offers", roles=("volunteer",), query=OfferQuerySchema, response=views.OfferPage)
    def list_offers(self, request, actor):
        return self.rpc("dispatch", "list_offers", actor.to_dict(), query_of(request))

    @route("POST", API + "/offers/<offer_id>/accept", roles=("volunteer",), response=views.OfferView)
    def accept_offer(self, request, actor, offer_id):
        return self.rpc("dispatch", "accept_offer", actor.to_dict(), offer_id)

    @route("POST", API + "/offers/<offer_id>/decline", roles=("volunteer",), body=DeclineSchema, body_required=False,
           response=views.OfferView)
    def decline_offer(self, request, actor, offer_id):
        return self.rpc("dispatch", "decline_offer", actor.to_dict(), offer_id, read_json(request, required=False))

    # ---- volunteers and service --------------------------------------------------------------

    @route("POST", API + "/volunteers", roles=("volunteer",), status=201, body=VolunteerCreateSchema,
           response=views.VolunteerView)
    def create_volunteer(self, request, actor):
        return self.rpc("volunteers", "create_volunteer", actor.to_dict(), read_json(request))

    @route("GET", API + "/volunteers/me", roles=("volunteer",), response=views.VolunteerView)
    def my_volunteer(self, request, actor):
        return self.rpc("volunteers", "my_volunteer", actor.to_dict())

    @route("GET", API + "/volunteers/<volunteer_id>", response=views.VolunteerView)
    def get_volunteer(self, request, actor, volunteer_id):
        return self.rpc("volunteers", "get_volunteer", actor.to_dict(), volunteer_id)

    @route("PATCH", API + "/volunteers/<volunteer_id>", roles=("volunteer", "staff", "admin"), body=VolunteerUpdateSchema,
           response=views.VolunteerView)
    def update_volunteer(self, request, actor, volunteer_id):
        return self.rpc("volunteers", "update_volunteer", actor.to_dict(), volunteer_id, read_json(request))

    @route("POST", API + "/teams", roles=("volunteer", "staff", "admin"), status=201, body=TeamCreateSchema,
           response=views.TeamView)
    def create_team(self, request, actor):
        return self.rpc("volunteers", "create_team", actor.to_dict(), read_json(request))

    @route("GET", API + "/teams", query=TeamQuerySchema, response=views.TeamList)
    def list_teams(self, request, actor):
        return self.rpc("volunteers", "list_teams", actor.to_dict(), query_of(request))

    @route("GET", API + "/teams/<team_id>", response=views.TeamView)
    def get_team(self, request, actor, team_id):
        return self.rpc("volunteers", "get_team", actor.to_dict(), team_id)

    @route("POST", API + "/teams/<team_id>/members", roles=("volunteer", "staff", "admin"), status=201,
           body=TeamMemberSchema, response=views.TeamView)
    def add_team_member(self, request, actor, team_id):
        return self.rpc("volunteers", "add_team_member", actor.to_dict(), team_id, read_json(request))

    @route("GET", API + "/teams/<team_id>/score", response=views.ScoreView)
    def team_score(self, request, actor, team_id):
        self.rpc("volunteers", "get_team", actor.to_dict(), team_id)  # 404 for an unknown team
        return self.rpc("ratings", "score", "team", team_id)

    @route("POST", API + "/needs/<need_id>/check-in", roles=("volunteer",), body=CheckInSchema, body_required=False,
           response=views.ServiceRecordView)
    def check_in(self, request, actor, need_id):
        return self.rpc("volunteers", "check_in", actor.to_dict(), need_id, read_json(request, required=False))

    @route("POST", API + "/needs/<need_id>/check-out", roles=("volunteer",), body=CheckOutSchema,
           response=views.ServiceRecordView)
    def check_out(self, request, actor, need_id):
        return self.rpc("volunteers", "check_out", actor.to_dict(), need_id, read_json(request))

    @route("GET", API + "/assignments", roles=("volunteer",), query=AssignmentQuerySchema,
           response=views.AssignmentList)
    def list_assignments(self, request, actor):
        """The volunteer's inbox, with each need as the needs service shows it to
        them: the resident's contact unmasked only while assigned or serving."""
        inbox = self.rpc("volunteers", "list_assignments", actor.to_dict(), query_of(request))
        pool = eventlet.GreenPool(10)

        def need_of(item):
            try:
                return self.rpc("needs", "get_need", actor.to_dict(), item["need_id"])
            except LastmileError:
                return None

        for item, need in zip(inbox["items"], pool.imap(need_of, inbox["items"])):
            if need is not None:
                need.pop("history", None)
                item["need"] = need
        return inbox

    @route("GET", API + "/volunteers/<volunteer_id>/certificate", query=views.CertificateQuerySchema,
           response=views.CertificateView)
    def volunteer_certificate(self, request, actor, volunteer_id):
        query = query_of(request)
        wants_pdf = query.pop("format", "json")
        if wants_pdf not in ("json", "pdf"):
            raise InvalidInput("format is json or pdf", {"format": ["Must be json or pdf."]})
        certificate = self.rpc("volunteers", "issue_certificate", actor.to_dict(), volunteer_id, query)
        if wants_pdf == "json":
            return certificate
        try:
            site_name = self.rpc("needs", "get_site", certificate["issuing_site_id"])["name"]
        except LastmileError:
            site_name = None
        return Response(render_pdf(certificate, site_name), mimetype="application/pdf", headers={
            "Content-Disposition": f'inline; filename="{certificate["certificate_number"]}.pdf"'})

    @route("GET", API + "/certificates/<number>", public=True, response=views.CertificateView)
    def verify_certificate(self, request, actor, number):
        return self.rpc("volunteers", "verify_certificate", number)

    @route("POST", API + "/volunteers/<volunteer_id>/hours/requests", roles=("volunteer",), status=201,
           body=HoursRequestSchema, response=views.HoursRequestView)
    def request_hours(self, request, actor, volunteer_id):
        return self.rpc("volunteers", "request_hours", actor.to_dict(), volunteer_id, read_json(request))

    @route("GET", API + "/hours-requests", roles=("volunteer", "staff", "admin"), query=StatusQuerySchema,
           response=views.HoursRequestList)
    def list_hours_requests(self, request, actor):
        return self.rpc("volunteers", "list_hours_requests", actor.to_dict(), query_of(request))

    @route("POST", API + "/hours-requests/<request_id>/<decision>", roles=STAFF, body=DecisionSchema,
           body_required=False, response=views.HoursRequestView)
    def decide_hours_request(self, request, actor, request_id, decision):
        approve = self._decision(decision)
        return self.rpc("volunteers", "decide_hours_request", actor.to_dict(), request_id, approve,
                        read_json(request, required=False))

    @route("GET", API + "/service-records", roles=STAFF, query=RecordQuerySchema, response=views.ServiceRecordList)
    def list_service_records(self, request, actor):
        return self.rpc("volunteers", "list_service_records", actor.to_dict(), query_of(request))

    @route("POST", API + "/service-records/<record_id>/<decision>", roles=STAFF, body=DecisionSchema,
           body_required=False, response=views.ServiceRecordView)
    def review_service_record(self, request, actor, record_id, decision):
        approve = self._decision(decision)
        return self.rpc("volunteers", "review_service_record", actor.to_dict(), record_id, approve,
                        read_json(request, required=False))

    @staticmethod
    def _decision(decision):
        if decision not in ("approve", "refuse"):
            raise NotFoundRoute()
        return decision == "approve"

    @route("GET", API + "/volunteers/<volunteer_id>/hours", response=views.HoursView)
    def volunteer_hours(self, request, actor, volunteer_id):
        return self.rpc("volunteers", "get_hours", actor.to_dict(), volunteer_id)

    # ---- ratings (评单) ------------------------------------------------------------------------

    @route("POST", API + "/needs/<need_id>/rating", roles=("resident", "collector"), status=201, body=RatingSchema,
           response=views.RatingView)
    def rate_need(self, request, actor, need_id):
        self.rpc("needs", "get_need", actor.to_dict(), need_id)  # 404 for a need the caller may not see
        return self.rpc("ratings", "submit_rating", actor.to_dict(), need_id, read_json(request))

    @route("GET", API + "/ratings", query=RatingQuerySchema, response=views.RatingPage)
    def list_ratings(self, request, actor):
        return self.rpc("ratings", "list_ratings", actor.to_dict(), query_of(request))

    @route("GET", API + "/volunteers/<volunteer_id>/score", response=views.ScoreView)
    def volunteer_score(self, request, actor, volunteer_id):
        self.rpc("volunteers", "get_volunteer", actor.to_dict(), volunteer_id)  # 404 for an unknown volunteer
        return self.rpc("ratings", "score", "volunteer", volunteer_id)

    @route("GET", API + "/notifications", query=NotificationQuerySchema)
    def list_notifications(self, request, actor):
        """What the caller has been told in the app, newest first (``unread=true`` for the new)."""
        return self.rpc("notifications", "list_notifications", actor.to_dict(), query_of(request))

    @route("POST", API + "/notifications/<notification_id>/read")
    def read_notification(self, request, actor, notification_id):
        return self.rpc("notifications", "mark_read", actor.to_dict(), notification_id)

    @route("GET", API + "/notifications/preferences")
    def notification_preferences(self, request, actor):
        return self.rpc("notifications", "get_preferences", actor.to_dict())

    @route("PUT", API + "/notifications/preferences", body=PreferencesSchema)
    def set_notification_preferences(self, request, actor):
        """Quiet hours (China time) and whether to receive SMS."""
        return self.rpc("notifications", "set_preferences", actor.to_dict(), read_json(request))

    @route("GET", API + "/stats", roles=STAFF, query=StatsQuerySchema, response=views.StatsView)
    def stats(self, request, actor):
        return self.rpc("ratings", "stats", actor.to_dict(), query_of(request))

    @route("GET", API + "/follow-ups", roles=STAFF, query=FollowUpQuerySchema, response=views.FollowUpPage)
    def list_follow_ups(self, request, actor):
        return self.rpc("ratings", "list_follow_ups", actor.to_dict(), query_of(request))

    @route("POST", API + "/follow-ups/<follow_up_id>/resolve", roles=STAFF, body=ResolveSchema,
           response=views.FollowUpView)
    def resolve_follow_up(self, request, actor, follow_up_id):
        return self.rpc("ratings", "resolve_follow_up", actor.to_dict(), follow_up_id, read_json(request))

