"""lastmile.events (the one envelope, DESIGN.md §3), lastmile.validation (one way
to validate, one error shape, masking) and services/needs/schemas.NeedCreateSchema
as the gateway's POST /needs body is loaded (DESIGN.md §4)."""
import json
import uuid
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from lastmile import events, validation
from lastmile.errors import InvalidInput
from services.needs.schemas import NeedCreateSchema, OnBehalfOfSchema, ProjectQuerySchema

# --------------------------------------------------------------------------- events


def test_make_event_carries_every_envelope_field():
    event = events.make_event("needs", "need_submitted", {"title": "送药上门"}, need_id="n-1")
    assert {"event_id", "type", "version", "occurred_at", "source", "need_id", "data"} <= set(event)
    assert event["type"] == "need_submitted"
    assert event["source"] == "needs"
    assert event["need_id"] == "n-1"
    assert event["data"] == {"title": "送药上门"}
    assert isinstance(event["version"], int) and event["version"] >= 1


def test_make_event_id_is_a_fresh_uuid_each_time():
    first = events.make_event("needs", "need_submitted", {})
    second = events.make_event("needs", "need_submitted", {})
    assert str(uuid.UUID(first["event_id"])) == first["event_id"]
    assert first["event_id"] != second["event_id"]  # consumers deduplicate on it


def test_make_event_need_id_defaults_to_none():
    assert events.make_event("volunteers", "volunteer_registered", {"id": "v-1"})["need_id"] is None


def test_make_event_occurred_at_is_now_in_utc_with_z():
    before = datetime.now(timezone.utc)
    stamp = events.make_event("needs", "need_submitted", {})["occurred_at"]
    after = datetime.now(timezone.utc)
    assert stamp.endswith("Z")
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert moment.utcoffset().total_seconds() == 0
    assert before <= moment <= after


def test_make_event_converts_a_local_time_to_utc():
    eight_in_haikou = datetime(2026, 3, 5, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    event = events.make_event("needs", "need_submitted", {}, occurred_at=eight_in_haikou)
    assert event["occurred_at"] == "2026-03-05T00:00:00Z"


def test_made_event_survives_json_and_parse():
    event = events.make_event("dispatch", "offer_made", {"offer_id": "o-1"}, need_id="n-1")
    wire = json.loads(json.dumps(event))
    assert events.parse(wire) == event


def test_parse_ignores_fields_it_does_not_know():
    event = events.make_event("dispatch", "offer_made", {})
    event["trace"] = "abc"
    assert events.parse(event)["trace"] == "abc"


def _without(field):
    event = events.make_event("needs", "need_approved", {"by": "staff-1"}, need_id="n-1")
    del event[field]
    return event


def _with(field, value):
    event = events.make_event("needs", "need_approved", {"by": "staff-1"}, need_id="n-1")
    event[field] = value
    return event


@pytest.mark.parametrize("field", ["event_id", "type", "version", "occurred_at", "source", "data"])
def test_parse_refuses_an_envelope_missing_a_field(field):
    with pytest.raises(InvalidInput) as caught:
        events.parse(_without(field))
    assert field in caught.value.details


@pytest.mark.parametrize(
    "field, value",
    [
        ("event_id", "not-a-uuid"),
        ("event_id", None),
        ("type", ""),
        ("type", "x" * 65),
        ("version", 0),
        ("version", "one"),
        ("occurred_at", "yesterday"),
        ("occurred_at", "2026-13-01T00:00:00Z"),
        ("source", ""),
        ("source", "s" * 33),
        ("data", None),
        ("data", ["not", "an", "object"]),
        ("data", "text"),
    ],
)
def test_parse_refuses_a_malformed_field(field, value):
    with pytest.raises(InvalidInput) as caught:
        events.parse(_with(field, value))
    assert field in caught.value.details


@pytest.mark.parametrize("body", [None, [], "need_submitted", 42])
def test_parse_refuses_a_body_that_is_not_an_object(body):
    with pytest.raises(InvalidInput):
        events.parse(body)


# --------------------------------------------------------------------------- masking


@pytest.mark.parametrize(
    "phone, masked",
    [
        ("13800138000", "138****8000"),
        ("19912345678", "199****5678"),
        ("12345", "****45"),
        ("", ""),
        (None, None),
    ],
)
def test_mask_phone(phone, masked):
    assert validation.mask_phone(phone) == masked


def test_mask_phone_hides_the_middle_digits():
    masked = validation.mask_phone("13812345678")
    assert "1234" not in masked and masked.count("*") == 4


def test_mask_phone_never_shows_every_digit_of_a_short_number():
    phone = "6512345"
    masked = validation.mask_phone(phone)
    assert [c for c in masked if c.isdigit()] != list(phone)


@pytest.mark.parametrize(
    "text, masked",
    [
        ("海口市琼山区红旗镇本立村3号", "海口****"),
        ("张三丰", "张三****"),
        ("张三", "****"),
        ("张", "****"),
        ("", ""),
        (None, None),
    ],
)
def test_mask_text(text, masked):
    assert validation.mask_text(text) == masked


# --------------------------------------------------------------------------- load()


@pytest.mark.parametrize("body", [None, [], "text", 3])
def test_load_refuses_a_body_that_is_not_an_object(body):
    with pytest.raises(InvalidInput) as caught:
        validation.load(OnBehalfOfSchema(), body)
    assert "body" in caught.value.details
    assert caught.value.status == 400


def test_load_names_each_bad_field():
    with pytest.raises(InvalidInput) as caught:
        validation.load(OnBehalfOfSchema(), {"name": "", "phone": "123"})
    assert set(caught.value.details) == {"name", "phone"}
    assert "name" in caught.value.message and "phone" in caught.value.message
    body = caught.value.to_body()["error"]
    assert body["code"] == "invalid_input"
    assert set(body["details"]) == {"name", "phone"}


def test_load_returns_the_loaded_values():
    assert validation.load(OnBehalfOfSchema(), {"name": "王阿婆", "phone": "13800138000"}) == {
        "name": "王阿婆", "phone": "13800138000",
    }


@pytest.mark.parametrize(
    "phone",
    ["13000000000", "13800138000", "15912345678", "17712345678", "19999999999"],
)
def test_chinese_mobile_numbers_accepted(phone):
    assert validation.load(OnBehalfOfSchema(), {"name": "王阿婆", "phone": phone})["phone"] == phone


@pytest.mark.parametrize(
    "phone",
    [
        "12800138000",      # second digit 2
        "10800138000",
        "23800138000",      # does not start with 1
        "1380013800",       # 10 digits
        "138001380001",     # 12 digits
        "+8613800138000",
        "138-0013-8000",
        "138 0013 8000",
        "1380013800a",
        "",
    ],
)
def test_other_phone_numbers_refused(phone):
    with pytest.raises(InvalidInput) as caught:
        validation.load(OnBehalfOfSchema(), {"name": "王阿婆", "phone": phone})
    assert set(caught.value.details) == {"phone"}


@pytest.mark.parametrize("phone", ["13800138000\n", "13８００１３８０００", "138٠٠١٣٨٠٠٠"])
def test_phone_with_newline_or_non_ascii_digits_refused(phone):
    with pytest.raises(InvalidInput):
        validation.load(OnBehalfOfSchema(), {"name": "王阿婆", "phone": phone})


def test_unknown_field_refused_by_strict_schema():
    with pytest.raises(InvalidInput) as caught:
        validation.load(OnBehalfOfSchema(), {"name": "王阿婆", "phone": "13800138000", "age": 80})
    assert set(caught.value.details) == {"age"}


def test_site_id_field_accepts_a_site_id():
    assert validation.load(ProjectQuerySchema(), {"site_id": "qiongshan.hongqi"})["site_id"] == "qiongshan.hongqi"


@pytest.mark.parametrize("site_id", ["Qiongshan", "qiongshan..benli", "a.b.c.d"])
def test_site_id_field_refuses_a_bad_site_id(site_id):
    with pytest.raises(InvalidInput) as caught:
        validation.load(ProjectQuerySchema(), {"site_id": site_id})
    assert set(caught.value.details) == {"site_id"}


# --------------------------------------------------------------------------- NeedCreateSchema

VALID_NEED = {
    "category": "health",
    "title": "帮独居老人量血压",
    "site_id": "qiongshan.hongqi.benli",
    "address": "本立村3号",
    "contact_phone": "13800138000",
    "beneficiary_group": "elderly_alone",
    "beneficiaries": 1,
}


def _need(**changes):
    body = dict(VALID_NEED)
    body.update(changes)
    return body


def _refused_fields(body):
    with pytest.raises(InvalidInput) as caught:
        validation.load(NeedCreateSchema(), body)
    return set(caught.value.details)


def test_need_missing_required_fields_are_each_named():
    assert _refused_fields({}) >= {
        "title", "site_id", "address", "contact_phone", "beneficiary_group", "beneficiaries",
    }


class TestNeedCreateSchema:
    """POST /needs bodies, as the needs service loads them."""

    def test_minimal_need_loads_with_defaults(self):
        need = validation.load(NeedCreateSchema(), dict(VALID_NEED))
        assert need["title"] == "帮独居老人量血压"
        assert need["urgency"] == "normal"
        assert need["description"] == ""
        assert need["lat"] is None and need["lon"] is None
        assert need["window_start"] is None and need["on_behalf_of"] is None

    @pytest.mark.parametrize(
        "field, value",
        [
            ("title", "送药"),                  # 2 characters
            ("title", "字" * 60),
            ("description", "说" * 2000),
            ("beneficiaries", 1),
            ("beneficiaries", 500),
            ("urgency", "normal"),
            ("urgency", "urgent"),
            ("lat", -90), ("lat", 90), ("lat", 20.03),
            ("lon", -180), ("lon", 180), ("lon", 110.35),
            ("contact_phone", "19912345678"),
        ],
    )
    def test_accepted_values(self, field, value):
        assert validation.load(NeedCreateSchema(), _need(**{field: value}))[field] == value

    @pytest.mark.parametrize(
        "group", ["left_behind_child", "elderly_alone", "solitary", "disabled", "low_income", "general"],
    )
    def test_every_beneficiary_group_accepted(self, group):
        assert validation.load(NeedCreateSchema(), _need(beneficiary_group=group))["beneficiary_group"] == group

    @pytest.mark.parametrize(
        "field, value",
        [
            ("title", "药"),                    # 1 character
            ("title", "字" * 61),
            ("title", ""),
            ("description", "说" * 2001),
            ("contact_phone", "12800138000"),
            ("contact_phone", "1380013800"),
            ("contact_phone", "010-12345678"),
            ("beneficiaries", 0),
            ("beneficiaries", 501),
            ("beneficiaries", -1),
            ("beneficiaries", "3"),             # strict: a string is not a count
            ("beneficiaries", 2.5),
            ("beneficiaries", None),
            ("urgency", "high"),
            ("urgency", "URGENT"),
            ("lat", 90.01), ("lat", -90.5),
            ("lon", 180.01), ("lon", -181),
            ("beneficiary_group", "children"),
            ("beneficiary_group", ""),
            ("site_id", "Qiongshan Hongqi"),
        ],
    )
    def test_refused_values_name_the_field(self, field, value):
        assert _refused_fields(_need(**{field: value})) == {field}

    @pytest.mark.parametrize("field", ["priority", "status", "owner_id"])
    def test_unknown_fields_refused(self, field):
        assert _refused_fields(_need(**{field: "x"})) == {field}

    def test_several_bad_fields_all_named(self):
        assert _refused_fields(_need(title="x", beneficiaries=0, urgency="now")) == {
            "title", "beneficiaries", "urgency",
        }
