"""群众点单 → 政府派单 → 志愿者接单 → 群众评单 over HTTP, on the whole stack."""
import time
import uuid
from datetime import datetime

import pytest

from services.volunteers.domain import HoursRule, credited_hours
from tests.e2e.flows import pending_offer, register, submit, unique_phone, wait_status  # noqa: F401
from tests.support import wait_for

def test_the_whole_cycle(anonymous, staff, volunteer, station, tap):
    resident, _ = register(anonymous, "resident", "黄阿婆")
    need = submit(resident, station)
    assert need["status"] == "submitted" and need["history"][0]["status"] == "submitted"

    approved = staff.post(f"/needs/{need['id']}/approve")
    assert approved.status_code == 200 and approved.json()["status"] == "dispatching"

    offer = pending_offer(volunteer, need["id"])
    assert offer["volunteer_id"] == volunteer.profile["id"] and offer["deadline"]
    accepted = volunteer.post(f"/offers/{offer['id']}/accept")
    assert accepted.status_code == 200, accepted.text
    assigned = wait_status(resident, need["id"], "assigned")
    assert assigned["volunteer_id"] == volunteer.profile["id"]

    # The assigned volunteer sees the resident's contact; the order shows staff the score.
    assert volunteer.get(f"/needs/{need['id']}").json()["contact_phone"] == "13700000001"
    order = staff.get(f"/needs/{need['id']}/order").json()
    assert order["status"] == "assigned" and order["offers"][0]["score_parts"]["distance"] > 0

    checked_in = volunteer.post(f"/needs/{need['id']}/check-in", json={"lat": 19.79, "lon": 110.49})
    assert checked_in.status_code == 200, checked_in.text
    wait_status(resident, need["id"], "in_service")
    time.sleep(2.5)
    checked_out = volunteer.post(f"/needs/{need['id']}/check-out",
                                 json={"summary": "量了血压，叮嘱按时服药", "beneficiaries_served": 1})
    assert checked_out.status_code == 200, checked_out.text
    record = checked_out.json()
    wait_status(resident, need["id"], "completed")

    expected_hours = credited_hours(
        datetime.fromisoformat(record["check_in_at"].replace("Z", "+00:00")),
        datetime.fromisoformat(record["check_out_at"].replace("Z", "+00:00")),
        HoursRule(minimum_minutes=0, step_minutes=0.02),
    )
    assert expected_hours > 0
    hours = volunteer.get(f"/volunteers/{volunteer.profile['id']}/hours").json()
    assert hours["total_hours"] == pytest.approx(expected_hours)
    assert [r["need_id"] for r in hours["records"]] == [need["id"]]

    rating = wait_for(lambda: (lambda r: r if r.status_code == 201 else None)(
        resident.post(f"/needs/{need['id']}/rating", json={"stars": 5, "tags": ["patient"], "comment": "很耐心"})),
        10, interval=0.2, message="the rating to be accepted")
    assert rating.json()["stars"] == 5
    rated = wait_status(resident, need["id"], "rated")
    assert [h["status"] for h in rated["history"]] == [
        "submitted", "dispatching", "assigned", "in_service", "completed", "rated"]

    score = resident.get(f"/volunteers/{volunteer.profile['id']}/score").json()
    assert score["count"] == 1 and score["mean"] == 5.0 and 4.0 < score["bayesian_mean"] < 5.0

    again = resident.post(f"/needs/{need['id']}/rating", json={"stars": 1})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"

    expected_events = ["need_submitted", "need_approved", "order_created", "offer_made", "offer_accepted",
                       "order_assigned", "service_started", "service_completed", "hours_credited",
                       "rating_submitted", "score_updated"]
    for type_ in expected_events:
        tap.wait(type_, need["id"])
    assert len(tap.of("hours_credited", need["id"])) == 1
    assert {e["source"] for e in tap.of(need_id=need["id"])} == {"needs", "dispatch", "volunteers", "ratings"}


def test_staff_reject_with_reason(anonymous, staff, station, tap):
    resident, _ = register(anonymous, "resident", "林大爷")
    need = submit(resident, station)
    missing_reason = staff.post(f"/needs/{need['id']}/reject", json={})
    assert missing_reason.status_code == 400 and "reason" in missing_reason.json()["error"]["details"]
    rejected = staff.post(f"/needs/{need['id']}/reject", json={"reason": "不属于志愿服务范围"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert rejected.json()["rejection_reason"] == "不属于志愿服务范围"
    assert tap.wait("need_rejected", need["id"])[0]["data"]["reason"] == "不属于志愿服务范围"
    assert staff.post(f"/needs/{need['id']}/approve").status_code == 409


def test_cancel_while_dispatching_withdraws_the_offer(anonymous, staff, volunteer, station, tap):
    resident, _ = register(anonymous, "resident", "符小丽")
    need = submit(resident, station)
    staff.post(f"/needs/{need['id']}/approve")
    offer = pending_offer(volunteer, need["id"])
    cancelled = resident.post(f"/needs/{need['id']}/cancel", json={"reason": "家人已经帮忙了"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    tap.wait("offer_withdrawn", need["id"])
    late = volunteer.post(f"/offers/{offer['id']}/accept")
    assert late.status_code == 409 and late.json()["error"]["message"]
    assert resident.get(f"/needs/{need['id']}").json()["status"] == "cancelled"


def test_operations_endpoints(stack, anonymous):
    import requests

    assert requests.get(stack["base"] + "/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(stack["base"] + "/readyz", timeout=5)
    assert ready.status_code == 200
    assert set(ready.json()["checks"]) == {"broker", "needs", "dispatch", "volunteers", "ratings", "notifications"}


def test_demo_data_is_there(anonymous):
    sites = {site["id"]: site for site in anonymous.get("/sites").json()["items"]}
    assert sites["qiongshan"]["level"] == "district"
    institutes = [s for s in sites.values() if s["level"] == "institute"]
    assert len(institutes) >= 12
    for institute in institutes:
        assert any(s["parent_id"] == institute["id"] for s in sites.values()), institute["id"]
    for station in ("qiongshan.hongqi.benli", "qiongshan.hongqi.daochong", "qiongshan.hongqi.tuqiao",
                    "qiongshan.jiazi.xinmin", "qiongshan.yunlong.yunling"):
        assert sites[station]["level"] == "station"
    menu = {p["name"] for p in anonymous.get("/projects", params={"site_id": "qiongshan.hongqi.benli"}).json()["items"]}
    assert {"红旗小喇叭", "益·老爸茶宣讲", "田螺计划"} <= menu and "红志小导游" not in menu
    categories = {c["code"] for c in anonymous.get("/categories").json()["items"]}
    assert categories == {"theory", "education", "culture", "science", "health", "fitness"}
    assert anonymous.login("13800000003", "lastmile123").token


def test_collectors_keep_the_beneficiary_registry(anonymous, admin):
    collector = anonymous.login("13800000004", "lastmile123")  # demo collector of 红旗镇
    counted = collector.request("PUT", "/sites/qiongshan.hongqi.daochong/beneficiaries",
                                json={"group": "left_behind_child", "count": 21})
    assert counted.status_code == 200, counted.text
    added = collector.post("/sites/qiongshan.hongqi.daochong/beneficiaries/entries",
                           json={"group": "left_behind_child", "name": "小明", "phone": "13700004321"})
    assert added.status_code == 201 and added.json()["phone"] == "137****4321"
    summary = admin.get("/sites/qiongshan.hongqi/beneficiaries").json()
    assert summary["by_group"]["left_behind_child"] >= 21
    assert "13700004321" in {e["phone"] for e in summary["entries"]}
    resident, _ = register(anonymous, "resident", "好奇的居民")
    assert resident.get("/sites/qiongshan.hongqi/beneficiaries").status_code == 403


def test_a_team_is_dispatched_by_staff_accepted_by_its_leader_and_serves_member_by_member(anonymous, admin):
    district_child = "qiongshan.e2e" + uuid.uuid4().hex[:6]
    station = district_child + ".village"
    for site_id in (district_child, station):
        assert admin.post("/sites", json={"id": site_id, "name": site_id}).status_code == 201
    people = []
    for name in ("队长", "队员甲", "队员乙"):
        client, phone = register(anonymous, "volunteer", name)
        profile = client.post("/volunteers", json={"name": name, "skills": ["theory"], "site_id": station})
        assert profile.status_code == 201, profile.text
        client.profile = profile.json()
        people.append(client)
    leader, first, second = people
    team = leader.post("/teams", json={"name": "党员志愿服务队", "type": "party", "site_id": station})
    assert team.status_code == 201, team.text
    team_id = team.json()["id"]
    assert first.post(f"/teams/{team_id}/members", json={"volunteer_id": second.profile["id"]}).status_code == 403
    for member in (first, second):
        added = leader.post(f"/teams/{team_id}/members", json={"volunteer_id": member.profile["id"]})
        assert added.status_code == 201, added.text
    assert len(leader.get(f"/teams/{team_id}").json()["members"]) == 3

    resident, _ = register(anonymous, "resident", "邓阿姨")
    need = submit(resident, station, category="culture", title="村里办一场琼剧演出")
    admin.post(f"/needs/{need['id']}/approve")
    wait_for(lambda: admin.get(f"/needs/{need['id']}/order").status_code == 200, 10, message="the order")

    def dispatch_to_team():
        response = admin.post(f"/needs/{need['id']}/dispatch", json={"team_id": team_id})
        return response if response.status_code == 201 else None

    offer = wait_for(dispatch_to_team, 10, interval=0.3, message="the team offer").json()
    assert offer["team_id"] == team_id and offer["volunteer_id"] == leader.profile["id"]
    assert pending_offer(leader, need["id"])["id"] == offer["id"]
    assert leader.post(f"/offers/{offer['id']}/accept").status_code == 200
    wait_status(resident, need["id"], "assigned")

    def checked_in(member):
        response = member.post(f"/needs/{need['id']}/check-in", json={})
        return response if response.status_code == 200 else None

    for member in (first, leader):  # the second member never comes
        wait_for(lambda: checked_in(member), 10, interval=0.2, message="a member's check-in")
    wait_status(resident, need["id"], "in_service")
    time.sleep(1.5)
    done = {"summary": "演出顺利，观众六十人", "beneficiaries_served": 60}
    assert first.post(f"/needs/{need['id']}/check-out", json=done).status_code == 200
    assert resident.get(f"/needs/{need['id']}").json()["status"] == "in_service"  # the leader closes the service
    assert leader.post(f"/needs/{need['id']}/check-out", json=done).status_code == 200
    wait_status(resident, need["id"], "completed")
    for member, served in ((leader, True), (first, True), (second, False)):
        hours = member.get(f"/volunteers/{member.profile['id']}/hours").json()
        assert (hours["total_hours"] > 0) is served, (member.profile["name"], hours)
    assert second.post(f"/needs/{need['id']}/check-in", json={}).status_code == 409

    rating = wait_for(lambda: (lambda r: r if r.status_code == 201 else None)(
        resident.post(f"/needs/{need['id']}/rating", json={"stars": 4})), 10, interval=0.2, message="the rating")
    assert rating.json()["team_id"] == team_id
    score = wait_for(lambda: (lambda s: s if s["count"] else None)(resident.get(f"/teams/{team_id}/score").json()),
                     10, message="the team's score")
    assert score["mean"] == 4.0


def test_inbox_certificate_pdf_and_verification(anonymous, staff, volunteer, station, stack):
    import io

    import requests
    from pypdf import PdfReader

    resident, _ = register(anonymous, "resident", "陈奶奶")
    need = submit(resident, station, contact_phone="13700007777")
    staff.post(f"/needs/{need['id']}/approve")
    offer = pending_offer(volunteer, need["id"])
    volunteer.post(f"/offers/{offer['id']}/accept")
    wait_status(resident, need["id"], "assigned")

    inbox = volunteer.get("/assignments").json()["items"]
    mine = next(item for item in inbox if item["need_id"] == need["id"])
    assert mine["status"] == "assigned" and mine["need"]["contact_phone"] == "13700007777"

    volunteer.post(f"/needs/{need['id']}/check-in", json={})
    time.sleep(1.5)
    volunteer.post(f"/needs/{need['id']}/check-out", json={"summary": "陪老人聊天", "beneficiaries_served": 1})
    wait_status(resident, need["id"], "completed")
    wait_for(lambda: resident.post(f"/needs/{need['id']}/rating", json={"stars": 5}).status_code == 201, 10,
             interval=0.2, message="the rating")
    done = next(item for item in volunteer.get("/assignments").json()["items"] if item["need_id"] == need["id"])
    assert done["status"] == "completed" and done["need"]["contact_phone"] != "13700007777"  # masked afterwards

    vid = volunteer.profile["id"]
    hours = volunteer.get(f"/volunteers/{vid}/hours").json()
    record = next(r["record"] for r in hours["records"] if r["need_id"] == need["id"])
    assert wait_for(lambda: volunteer.get(f"/volunteers/{vid}/hours").json()["records"][-1]["record"]["rating"],
                    10, message="the rating in the service record")["stars"] == 5

    certificate = volunteer.get(f"/volunteers/{vid}/certificate").json()
    assert certificate["total_hours"] == pytest.approx(hours["total_hours"]) and certificate["total_hours"] > 0
    assert need["id"] in {s["need_id"] for s in certificate["services"]}
    assert certificate["volunteer"]["name"] == "志愿者小符" and certificate["issuing_site_id"] == "qiongshan"
    verified = requests.get(f"{stack['api']}/certificates/{certificate['certificate_number']}", timeout=5)
    assert verified.status_code == 200 and verified.json() == certificate
    assert requests.get(f"{stack['api']}/certificates/LMC-19700101-NOSUCH", timeout=5).status_code == 404

    pdf = volunteer.get(f"/volunteers/{vid}/certificate", params={"format": "pdf"})
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    number = pdf.headers["Content-Disposition"].split('"')[1].removesuffix(".pdf")
    assert "志愿服务证明" in text and number in text and "志愿者小符" in text
    assert f"{record['hours']:g}" in text and "琼山区新时代文明实践中心" in text

    stranger, _ = register(anonymous, "volunteer", "路人")
    assert stranger.get(f"/volunteers/{vid}/certificate").status_code == 403
    assert volunteer.get(f"/volunteers/{vid}/certificate", params={"from": "2026-02-01", "to": "2026-01-01"}
                         ).status_code == 400
