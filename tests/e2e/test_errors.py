"""Bad requests get a 4xx with the JSON error body, and change nothing."""
import uuid

import pytest
import requests

from tests.e2e.flows import register, submit


def assert_error(response, status, code=None):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"] and isinstance(error["details"], dict)
    if code:
        assert error["code"] == code
    return error


@pytest.fixture(scope="module")
def resident(anonymous):
    return register(anonymous, "resident", "错误测试")[0]


@pytest.fixture(scope="module")
def need(resident):
    return submit(resident, "qiongshan.hongqi.benli")


def test_malformed_json(resident):
    response = resident.post("/needs", data=b'{"title": ', headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_input")


def test_body_that_is_not_json(resident):
    response = resident.post("/needs", data=b"title=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(response, 415, "unsupported_media_type")


def test_json_that_is_not_an_object(resident):
    assert_error(resident.post("/needs", json=[1, 2]), 400, "invalid_input")


def test_missing_and_mistyped_fields_are_each_named(resident):
    response = resident.post("/needs", json={"category": "health", "title": 5, "beneficiaries": "many",
                                             "site_id": "qiongshan.hongqi.benli"})
    details = assert_error(response, 400, "invalid_input")["details"]
    assert {"title", "beneficiaries", "address", "contact_phone", "beneficiary_group"} <= set(details)


def test_unknown_field_is_refused(resident):
    body = {"category": "health", "title": "上门量血压", "site_id": "qiongshan.hongqi.benli", "address": "3号",
            "contact_phone": "13700000001", "beneficiary_group": "general", "beneficiaries": 1, "colour": "red"}
    assert "colour" in assert_error(resident.post("/needs", json=body), 400)["details"]


def test_need_at_an_institute_is_refused(resident):
    body = {"category": "health", "title": "上门量血压", "site_id": "qiongshan.hongqi", "address": "3号",
            "contact_phone": "13700000001", "beneficiary_group": "general", "beneficiaries": 1}
    assert "site_id" in assert_error(resident.post("/needs", json=body), 400)["details"]


def test_unknown_ids_answer_404(resident, admin):
    missing = str(uuid.uuid4())
    assert_error(resident.get(f"/needs/{missing}"), 404, "not_found")
    assert_error(admin.post(f"/needs/{missing}/approve"), 404)
    assert_error(resident.get(f"/volunteers/{missing}"), 404)
    assert_error(resident.get("/no/such/route"), 404)


def test_method_not_allowed_is_json(resident):
    assert_error(resident.request("DELETE", "/needs"), 405)


def test_illegal_transition_is_409_and_changes_nothing(resident, need, anonymous):
    staff = anonymous.login("13800000003", "lastmile123")  # demo staff of the station
    rejected = staff.post(f"/needs/{need['id']}/reject", json={"reason": "重复提交"})
    assert rejected.status_code == 200
    assert_error(staff.post(f"/needs/{need['id']}/approve"), 409, "conflict")
    assert_error(resident.post(f"/needs/{need['id']}/cancel"), 409)
    current = resident.get(f"/needs/{need['id']}").json()
    assert current["status"] == "rejected" and len(current["history"]) == 2


def test_no_token_or_bad_token_is_401(stack, anonymous):
    assert_error(anonymous.get("/needs"), 401, "unauthorized")
    bad = requests.get(stack["api"] + "/needs", headers={"Authorization": "Bearer not-a-token"}, timeout=5)
    assert_error(bad, 401)
    wrong_password = anonymous.post("/auth/token", json={"phone": "13800000003", "password": "wrong-password"})
    assert_error(wrong_password, 401)


def test_wrong_role_is_403(resident, anonymous):
    assert_error(resident.post("/accounts", json={"phone": "13811112222", "password": "password1", "name": "x",
                                                  "role": "staff", "site_id": "qiongshan"}), 403, "forbidden")
    assert_error(resident.get("/offers"), 403)
    volunteer = anonymous.login("13900000001", "lastmile123")
    assert_error(volunteer.post("/needs", json={}), 403)


def test_body_too_large_is_413(resident):
    huge = {"title": "x" * (70 * 1024)}
    assert_error(resident.post("/needs", json=huge), 413, "body_too_large")


def test_duplicate_registration_is_409(anonymous):
    body = {"phone": "13700000001", "password": "lastmile123", "name": "黄阿婆", "role": "resident"}
    assert_error(anonymous.post("/auth/register", json=body), 409)


def test_page_size_over_100_is_refused(resident):
    assert "page_size" in assert_error(resident.get("/needs", params={"page_size": 101}), 400)["details"]


def test_idempotent_submission(resident):
    body = {"category": "health", "title": "送药上门", "site_id": "qiongshan.hongqi.benli", "address": "3号",
            "contact_phone": "13700000001", "beneficiary_group": "general", "beneficiaries": 1}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = resident.post("/needs", json=body, headers=dict(key))
    again = resident.post("/needs", json=body, headers=dict(key))
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert_error(resident.post("/needs", json=dict(body, title="别的事情"), headers=dict(key)), 409)
