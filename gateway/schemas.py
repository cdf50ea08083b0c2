"""What the gateway's routes answer, as marshmallow schemas for the OpenAPI document
(gateway/openapi.py). Documentation only: nothing is dumped through them. Each
mirrors a ``*_view`` function of the service that makes the answer; a field the
view may leave empty is ``allow_none``.

The one request schema here is CertificateQuerySchema: the volunteers service's
period plus ``format``, which the gateway itself checks."""
from marshmallow import Schema, fields, validate

from lastmile.auth import ROLES
from lastmile.validation import PeriodSchema

Str = fields.String
Int = fields.Integer
Num = fields.Float
Bool = fields.Boolean
When = fields.DateTime


def opt(field_class, *args, **kwargs):
    """A field that is always present but may be null."""
    return field_class(*args, required=True, allow_none=True, **kwargs)


def req(field_class, *args, **kwargs):
    return field_class(*args, required=True, **kwargs)


def any_object(**kwargs):
    return fields.Dict(keys=Str(), values=fields.Raw(allow_none=True), **kwargs)


def listed(item, name):
    """``{items, total}``: a whole list."""
    return Schema.from_dict({"items": req(fields.List, fields.Nested(item)), "total": req(Int)}, name=name)


def paged(item, name):
    """``{items, total, page, page_size}``: one page of a list."""
    return Schema.from_dict({"items": req(fields.List, fields.Nested(item)), "total": req(Int),
                             "page": req(Int), "page_size": req(Int)}, name=name)


# ---- requests the gateway checks itself ------------------------------------------------

class CertificateQuerySchema(PeriodSchema):
    format = fields.String(load_default="json", validate=validate.OneOf(("json", "pdf")))


# ---- errors and operations ---------------------------------------------------------------

class ErrorDetailSchema(Schema):
    code = req(Str, metadata={"example": "invalid_input"})
    message = req(Str)
    details = req(any_object, metadata={"description": "For invalid input, each bad field with its messages."})


class ErrorSchema(Schema):
    error = req(fields.Nested, ErrorDetailSchema)


class HealthView(Schema):
    status = req(Str)


class ReadyView(Schema):
    status = req(Str, validate=validate.OneOf(("ready", "unavailable")))
    checks = req(fields.Dict, keys=Str(), values=Str(),
                 metadata={"description": "broker and each service: ok, or what went wrong"})
    missing = fields.List(Str())


# ---- accounts -------------------------------------------------------------------------------

class UserView(Schema):
    id = req(Str)
    phone = req(Str)
    name = req(Str)
    role = req(Str, validate=validate.OneOf(ROLES))
    site_id = opt(Str)
    created_at = req(When)


class TokenUserView(Schema):
    id = req(Str)
    role = req(Str, validate=validate.OneOf(ROLES))
    site_id = opt(Str)
    name = req(Str)


class TokenView(Schema):
    access_token = req(Str)
    token_type = req(Str, validate=validate.OneOf(("bearer",)))
    expires_in = req(Int, metadata={"description": "seconds"})
    user = req(fields.Nested, TokenUserView)


class ApiKeyView(Schema):
    id = req(Str)
    name = req(Str)
    api_key = req(Str, metadata={"description": "shown this once only"})
    created_at = req(When)


class ApiKeyRecordView(Schema):
    """A key as kept: never the key itself."""

    id = req(Str)
    name = req(Str)
    created_by = req(Str)
    created_at = req(When)
    revoked = req(fields.Boolean, metadata={"description": "a revoked key files nothing any more"})


# ---- sites, categories, the service menu, beneficiaries -------------------------------------

class SiteView(Schema):
    id = req(Str)
    name = req(Str)
    level = req(Str, validate=validate.OneOf(("district", "institute", "station")))
    parent_id = opt(Str)
    auto_approve = req(Bool)
    lat = opt(Num)
    lon = opt(Num)


class CategoryView(Schema):
    code = req(Str)
    name = req(Str)


class ProjectView(Schema):
    id = req(Str)
    name = req(Str)
    category = req(Str)
    description = req(Str)
    team_name = opt(Str)
    site_id = req(Str)
    active = req(Bool)
    created_at = req(When)


class BeneficiaryEntryView(Schema):
    id = req(Str)
    site_id = req(Str)
    group = req(Str)
    name = req(Str)
    phone = opt(Str, metadata={"description": "masked except to staff of the site"})
    id_number = opt(Str, metadata={"description": "masked except to staff of the site"})
    note = opt(Str)
    created_at = req(When)


class StationBeneficiariesView(Schema):
    site_id = req(Str)
    by_group = req(fields.Dict, keys=Str(), values=Int())
    total = req(Int)


class BeneficiariesView(Schema):
    site_id = req(Str)
    total = req(Int)
    by_group = req(fields.Dict, keys=Str(), values=Int())
    by_site = req(fields.List, fields.Nested(StationBeneficiariesView))
    entries = req(fields.List, fields.Nested(BeneficiaryEntryView))


# ---- needs ----------------------------------------------------------------------------------

class HistoryEntryView(Schema):
    status = req(Str)
    at = req(When)
    by = opt(Str)
    note = opt(Str)


class NeedView(Schema):
    id = req(Str)
    status = req(Str)
    channel = req(Str)
    category = req(Str)
    project_id = opt(Str)
    title = req(Str)
    description = opt(Str)
    site_id = req(Str)
    address = req(Str, metadata={"description": "masked unless the caller may see the contact"})
    contact_phone = req(Str, metadata={"description": "masked unless the caller may see the contact"})
    contact_name = opt(Str)
    beneficiary_group = req(Str)
    beneficiaries = req(Int)
    urgency = req(Str)
    window_start = opt(When)
    window_end = opt(When)
    lat = opt(Num)
    lon = opt(Num)
    owner_id = req(Str)
    collector_id = opt(Str)
    possible_duplicate = req(Bool)
    volunteer_id = opt(Str)
    rejection_reason = opt(Str)
    created_at = req(When)
    updated_at = req(When)
    history = fields.List(fields.Nested(HistoryEntryView),
                          metadata={"description": "every status, when and by whom (not in lists)"})


# ---- dispatch -------------------------------------------------------------------------------

class OfferView(Schema):
    id = req(Str)
    need_id = req(Str)
    order_id = req(Str)
    volunteer_id = req(Str)
    team_id = opt(Str)
    status = req(Str)
    level = req(Str)
    manual = req(Bool)
    deadline = opt(When)
    reason = opt(Str)
    created_at = req(When)
    responded_at = opt(When)
    score = fields.Float(allow_none=True, metadata={"description": "staff only"})
    score_parts = fields.Dict(allow_none=True, metadata={"description": "staff only"})
    need = any_object(metadata={"description": "the need offered, in the volunteer's list"})


class OrderView(Schema):
    id = req(Str)
    need_id = req(Str)
    status = req(Str)
    category = req(Str)
    site_id = req(Str)
    urgency = req(Str)
    strategy = req(Str)
    level = req(Str)
    level_site_id = req(Str)
    volunteer_id = opt(Str)
    team_id = opt(Str)
    assigned_at = opt(When)
    started_at = opt(When)
    created_at = req(When)
    offers = req(fields.List, fields.Nested(OfferView))


# ---- volunteers, teams and service ---------------------------------------------------------------

class VolunteerView(Schema):
    id = req(Str)
    user_id = req(Str)
    number = req(Str)
    name = req(Str)
    phone = opt(Str)
    id_number = opt(Str, metadata={"description": "masked"})
    skills = req(fields.List, Str())
    site_id = req(Str)
    lat = opt(Num)
    lon = opt(Num)
    availability = opt(fields.Dict)
    status = req(Str, validate=validate.OneOf(("active", "suspended")))
    created_at = req(When)


class TeamMemberView(Schema):
    volunteer_id = req(Str)
    name = req(Str)
    number = req(Str)


class TeamView(Schema):
    id = req(Str)
    name = req(Str)
    type = req(Str)
    site_id = req(Str)
    leader_volunteer_id = req(Str)
    created_at = req(When)
    members = req(fields.List, fields.Nested(TeamMemberView))


class RatingInRecordView(Schema):
    stars = req(Int)
    tags = opt(fields.List, Str())
    comment = opt(Str)


class ServiceRecordView(Schema):
    id = req(Str)
    need_id = req(Str)
    site_id = req(Str)
    category = req(Str)
    title = req(Str)
    check_in_at = req(When)
    check_out_at = opt(When)
    hours = opt(Num)
    summary = opt(Str)
    beneficiaries_served = opt(Int)
    flagged = req(Bool)
    flag_reason = opt(Str)
    review = opt(Str)
    volunteer_id = req(Str)
    rating = opt(fields.Nested, RatingInRecordView)


class AssignmentView(Schema):
    id = req(Str)
    need_id = req(Str)
    status = req(Str)
    team_id = opt(Str)
    assigned_at = opt(When)
    need = opt(any_object, metadata={"description": "the need as the volunteer may see it"})


class HoursEntryView(Schema):
    need_id = opt(Str)
    hours = req(Num)
    kind = req(Str)
    service_date = req(fields.Date)
    credited_at = req(When)
    record = fields.Nested(ServiceRecordView)


class HoursView(Schema):
    volunteer_id = req(Str)
    total_hours = req(Num)
    by_kind = req(fields.Dict, keys=Str(), values=Num())
    records = req(fields.List, fields.Nested(HoursEntryView))


class HoursRequestView(Schema):
    id = req(Str)
    volunteer_id = req(Str)
    kind = req(Str)
    hours = req(Num)
    service_date = req(fields.Date)
    need_id = opt(Str)
    reason = req(Str)
    status = req(Str, validate=validate.OneOf(("pending", "approved", "refused")))
    decided_by = opt(Str)
    decision_note = opt(Str)
    created_at = req(When)
    decided_at = opt(When)


class CertifiedVolunteerView(Schema):
    id = req(Str)
    name = req(Str)
    number = req(Str)
    id_number = opt(Str)


class PeriodView(Schema):
    from_ = opt(fields.Date, data_key="from")
    to = opt(fields.Date)


class CertifiedServiceView(Schema):
    need_id = req(Str)
    title = req(Str)
    category = req(Str)
    site_id = req(Str)
    date = req(fields.Date)
    check_in_at = req(When)
    check_out_at = opt(When)
    hours = req(Num)
    summary = opt(Str)
    beneficiaries_served = opt(Int)
    rating_stars = opt(Int)


class AdjustmentView(Schema):
    kind = req(Str)
    date = req(fields.Date)
    hours = req(Num)


class CertificateView(Schema):
    certificate_number = req(Str)
    volunteer = req(fields.Nested, CertifiedVolunteerView)
    period = req(fields.Nested, PeriodView)
    total_hours = req(Num)
    service_hours = req(Num)
    adjustment_hours = req(Num)
    services = req(fields.List, fields.Nested(CertifiedServiceView))
    adjustments = req(fields.List, fields.Nested(AdjustmentView))
    issuing_site_id = req(Str)
    issued_at = req(When)


# ---- ratings and figures ----------------------------------------------------------------------

class RatingView(Schema):
    id = req(Str)
    need_id = req(Str)
    volunteer_id = req(Str)
    team_id = opt(Str)
    site_id = req(Str)
    category = req(Str)
    stars = req(Int)
    tags = req(fields.List, Str())
    comment = opt(Str)
    created_at = req(When)


class ScoreView(Schema):
    subject_type = req(Str)
    subject_id = req(Str)
    count = req(Int)
    sum = req(Num)
    mean = opt(Num)
    bayesian_mean = req(Num)
    distribution = req(fields.Dict, keys=Str(), values=Int(),
                       metadata={"description": "ratings by stars, \"1\" to \"5\""})


class FollowUpView(Schema):
    id = req(Str)
    need_id = req(Str)
    rating_id = req(Str)
    site_id = req(Str)
    responsible_site_id = req(Str)
    escalated_at = opt(When)
    status = req(Str, validate=validate.OneOf(("open", "resolved")))
    reason = req(Str)
    note = opt(Str)
    resolved_by = opt(Str)
    created_at = req(When)
    resolved_at = opt(When)


class FiguresView(Schema):
    needs_submitted = req(Int)
    needs_completed = req(Int)
    services_held = req(Int)
    volunteer_hours = req(Num)
    people_served = req(Int)
    average_rating = opt(Num)
    ratings = req(Int)
    fill_rate = opt(Num)
    median_minutes_to_acceptance = opt(Num)
    ratings_by_stars = req(fields.Dict, keys=Str(), values=Int(),
                           metadata={"description": "how many ratings gave 1, 2, 3, 4 and 5 stars"})


class StatsView(FiguresView):
    site_id = req(Str)
    from_ = opt(fields.Date, data_key="from")
    to = opt(fields.Date)
    by_category = req(fields.Dict, keys=Str(), values=fields.Nested(FiguresView))
    by_site = req(fields.Dict, keys=Str(), values=fields.Nested(FiguresView))
    by_day = req(fields.Dict, keys=Str(), values=fields.Nested(FiguresView), metadata={
        "description": "per China date: needs by the day they were submitted, hours by the day they were served"})


# ---- list envelopes -----------------------------------------------------------------------------

SiteList = listed(SiteView, "SiteList")
ApiKeyList = listed(ApiKeyRecordView, "ApiKeyList")
CategoryList = listed(CategoryView, "CategoryList")
ProjectList = listed(ProjectView, "ProjectList")
NeedPage = paged(NeedView, "NeedPage")
OfferPage = paged(OfferView, "OfferPage")
TeamList = listed(TeamView, "TeamList")
AssignmentList = listed(AssignmentView, "AssignmentList")
HoursRequestList = listed(HoursRequestView, "HoursRequestList")
ServiceRecordList = listed(ServiceRecordView, "ServiceRecordList")
RatingPage = paged(RatingView, "RatingPage")
FollowUpPage = paged(FollowUpView, "FollowUpPage")
