"""Open311 GeoReport v2, driven with a plain HTTP client in both formats."""
import xml.etree.ElementTree as ElementTree

import pytest
import requests

from tests.e2e.flows import pending_offer, wait_status
from tests.support import wait_for


@pytest.fixture(scope="module")
def open311(stack):
    return stack["base"] + "/open311/v2"


@pytest.fixture(scope="module")
def api_key(admin):
    response = admin.post("/open311/keys", json={"name": "12345 市民热线"})
    assert response.status_code == 201, response.text
    return response.json()["api_key"]


def xml_of(response):
    assert response.headers["Content-Type"].startswith("text/xml"), response.headers["Content-Type"]
    return ElementTree.fromstring(response.content)


def test_discovery_and_services_in_both_formats(open311):
    discovery = requests.get(open311 + "/discovery.json", timeout=5).json()
    assert discovery["endpoints"][0]["url"].endswith("/open311/v2/")
    assert xml_of(requests.get(open311 + "/discovery.xml", timeout=5)).tag == "discovery"

    services = requests.get(open311 + "/services.json", timeout=5).json()
    assert isinstance(services, list)
    assert {s["service_code"] for s in services} == {"theory", "education", "culture", "science", "health", "fitness"}
    assert all(s["type"] == "realtime" and s["metadata"] is True for s in services)
    root = xml_of(requests.get(open311 + "/services.xml", timeout=5))
    assert root.tag == "services" and len(root.findall("service")) == 6
    assert root.find("service/metadata").text == "true"

    definition = requests.get(open311 + "/services/culture.json", timeout=5).json()
    codes = {a["code"]: a for a in definition["attributes"]}
    assert definition["service_code"] == "culture" and {"station", "beneficiary_group", "project"} <= set(codes)
    assert "红志小导游" in {v["name"] for v in codes["project"]["values"]}
    root = xml_of(requests.get(open311 + "/services/culture.xml", timeout=5))
    assert root.tag == "service_definition" and root.find("attributes/attribute/code") is not None


def test_errors_use_the_specification_format(open311, api_key):
    missing = requests.get(open311 + "/services/nothing.json", timeout=5)
    assert missing.status_code == 404 and missing.json()[0]["code"] == 404 and missing.json()[0]["description"]
    root = xml_of(requests.get(open311 + "/services/nothing.xml", timeout=5))
    assert root.tag == "errors" and root.find("error/code").text == "404"

    no_key = requests.post(open311 + "/requests.json", data={"service_code": "health", "lat": 19.785,
                                                             "long": 110.495, "phone": "13700001111"}, timeout=5)
    assert no_key.status_code == 403 and no_key.json()[0]["code"] == 403
    no_code = requests.post(open311 + "/requests.json", data={"api_key": api_key}, timeout=5)
    assert no_code.status_code == 400 and "service_code" in no_code.json()[0]["description"]
    far = requests.post(open311 + "/requests.json", timeout=5, data={
        "api_key": api_key, "service_code": "health", "lat": 39.9, "long": 116.4, "phone": "13700001111"})
    assert far.status_code == 400
    bad_phone = requests.post(open311 + "/requests.json", timeout=5, data={
        "api_key": api_key, "service_code": "health", "lat": 19.785, "long": 110.495, "phone": "12"})
    assert bad_phone.status_code == 400 and "contact_phone" in bad_phone.json()[0]["description"]
    elsewhere = requests.get(open311 + "/services.json", params={"jurisdiction_id": "beijing"}, timeout=5)
    assert elsewhere.status_code == 404
    assert requests.get(open311 + "/services.json", params={"jurisdiction_id": ""}, timeout=5).status_code == 200
    assert requests.get(open311 + "/services.json", params={"jurisdiction_id": "qiongshan"}, timeout=5).status_code == 200
    assert requests.get(open311 + "/requests.json", params={"start_date": "yesterday"}, timeout=5).status_code == 400
    assert requests.get(open311 + "/requests/no-such-id.json", timeout=5).status_code == 404


def test_a_revoked_key_files_nothing(open311, admin, station):
    issued = admin.post("/open311/keys", json={"name": "退役的系统"}).json()
    body = {"api_key": issued["api_key"], "service_code": "health", "attribute[station]": station,
            "phone": "13700002222", "description": "上门量血压"}
    assert requests.post(open311 + "/requests.json", data=body, timeout=5).status_code == 201

    revoked = admin.post(f"/open311/keys/{issued['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    refused = requests.post(open311 + "/requests.json", data=body, timeout=5)
    assert refused.status_code == 403 and refused.json()[0]["code"] == 403
    listed = admin.get("/open311/keys").json()["items"]
    assert {k["id"]: k["revoked"] for k in listed}[issued["id"]] is True
    assert issued["api_key"] not in str(listed)
    assert admin.post("/open311/keys/no-such-key/revoke").status_code == 404


def test_a_request_filed_through_open311_is_followed_to_closed(open311, api_key, anonymous, staff, volunteer,
                                                                station):
    filed = requests.post(open311 + "/requests.xml", timeout=10, data={
        "api_key": api_key, "jurisdiction_id": "", "service_code": "health", "attribute[station]": station,
        "attribute[beneficiary_group]": "elderly_alone", "description": "独居老人需要上门量血压",
        "address_string": "红旗镇本立村8号", "first_name": "阿婆", "last_name": "黄", "phone": "13700002222",
        "lat": 19.79, "long": 110.49})
    assert filed.status_code == 201, filed.text
    need_id = xml_of(filed).find("request/service_request_id").text

    one = requests.get(f"{open311}/requests/{need_id}.json", timeout=5).json()
    assert isinstance(one, list) and len(one) == 1
    request = one[0]
    assert request["status"] == "open" and request["status_notes"].startswith("submitted")
    assert request["service_code"] == "health" and request["agency_responsible"] == station
    assert "13700002222" not in str(one) and request["address"] != "红旗镇本立村8号"  # nothing private leaves
    assert requests.get(f"{open311}/tokens/{need_id}.json", timeout=5).json() == [
        {"service_request_id": need_id, "token": need_id}]

    seen_by_staff = staff.get(f"/needs/{need_id}").json()
    assert seen_by_staff["channel"] == "open311" and seen_by_staff["contact_name"] == "黄 阿婆"
    staff.post(f"/needs/{need_id}/approve")
    offer = pending_offer(volunteer, need_id)
    volunteer.post(f"/offers/{offer['id']}/accept")
    wait_status(staff, need_id, "assigned")
    volunteer.post(f"/needs/{need_id}/check-in", json={})
    wait_status(staff, need_id, "in_service")
    volunteer.post(f"/needs/{need_id}/check-out", json={"summary": "量了血压", "beneficiaries_served": 1})

    def closed():
        found = requests.get(f"{open311}/requests.json", params={"service_request_id": need_id}, timeout=5).json()
        return found[0] if found and found[0]["status"] == "closed" else None

    request = wait_for(closed, 15, interval=0.2, message="the request to close")
    assert request["status_notes"].startswith("completed")
    listed = requests.get(open311 + "/requests.json", params={"status": "closed", "service_code": "health"},
                          timeout=5).json()
    assert need_id in {r["service_request_id"] for r in listed}
    assert need_id not in {r["service_request_id"] for r in requests.get(
        open311 + "/requests.json", params={"status": "open"}, timeout=5).json()}
    root = xml_of(requests.get(open311 + "/requests.xml", params={"service_request_id": need_id}, timeout=5))
    assert root.tag == "service_requests" and root.find("request/status").text == "closed"
