"""The needs service on the real broker and database, driven by RPC and by the
events other services would publish."""
import pytest
from kombu import Connection

from lastmile.errors import Conflict, Forbidden, InvalidInput, NotFound
from services.needs.service import NeedsService
from tests.service.conftest import ADMIN, actor
from tests.support import publish_event, wait_for


def make_sites(rpc, tree):
    for key in ("district", "institute", "station", "other_station", "other_institute", "far_station"):
        rpc.needs.create_site(ADMIN, {"id": tree[key], "name": key})


def need_body(tree, **overrides):
    body = {
        "category": "health", "title": "上门量血压", "site_id": tree["station"], "address": "村东3号",
        "contact_phone": "13700000001", "beneficiary_group": "elderly_alone", "beneficiaries": 1,
    }
    body.update(overrides)
    return body


@pytest.fixture
def needs(run_services, rpc, site_tree):
    run_services(NeedsService)
    make_sites(rpc, site_tree)
    return rpc.needs


def test_submit_and_approve_publish_events_in_one_envelope(needs, tap, site_tree):
    resident = actor("resident")
    staff = actor("staff", site_tree["institute"])
    need = needs.submit_need(resident, need_body(site_tree))["need"]
    assert need["status"] == "submitted" and need["channel"] == "web"

    approved = needs.approve_need(staff, need["id"], {})
    assert approved["status"] == "dispatching"
    assert [h["status"] for h in approved["history"]] == ["submitted", "dispatching"]
    assert approved["history"][1]["by"] == staff["id"]

    event = tap.wait("need_approved", need["id"])[0]
    assert set(event) >= {"event_id", "type", "version", "occurred_at", "source", "need_id", "data"}
    assert event["source"] == "needs" and event["occurred_at"].endswith("Z")
    assert event["data"]["site_id"] == site_tree["station"] and event["data"]["owner_id"] == resident["id"]
    assert len(tap.wait("need_submitted", need["id"])) == 1
    changes = tap.wait("need_status_changed", need["id"])
    assert [(c["data"]["from"], c["data"]["to"]) for c in changes] == [("submitted", "dispatching")]


def test_staff_of_another_branch_cannot_approve_and_nothing_changes(needs, site_tree):
    resident = actor("resident")
    need = needs.submit_need(resident, need_body(site_tree))["need"]
    outsider = actor("staff", site_tree["other_institute"])
    with pytest.raises(NotFound):  # they may not even see it
        needs.approve_need(outsider, need["id"], {})
    assert needs.get_need(resident, need["id"])["status"] == "submitted"


def test_invalid_need_names_each_field_and_stores_nothing(needs, site_tree):
    resident = actor("resident")
    with pytest.raises(InvalidInput) as caught:
        needs.submit_need(resident, need_body(site_tree, title="x", contact_phone="12345", beneficiaries=0))
    assert set(caught.value.details) == {"title", "contact_phone", "beneficiaries"}
    assert needs.list_needs(resident, {})["total"] == 0


def test_idempotency_key_returns_the_same_need_and_refuses_another_body(needs, site_tree):
    resident = actor("resident")
    first = needs.submit_need(resident, need_body(site_tree), "key-1")
    again = needs.submit_need(resident, need_body(site_tree), "key-1")
    assert first["created"] is True and again["created"] is False
    assert again["need"]["id"] == first["need"]["id"]
    with pytest.raises(Conflict):
        needs.submit_need(resident, need_body(site_tree, title="另一件事"), "key-1")
    assert needs.list_needs(resident, {})["total"] == 1


def test_facts_from_other_services_move_the_need_once(needs, infrastructure, site_tree):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    resident = actor("resident")
    need = needs.submit_need(resident, need_body(site_tree))["need"]
    needs.approve_need(actor("staff", site_tree["station"]), need["id"], {})

    # service_started arrives before the assignment it follows: it must wait, not be lost.
    publish_event(uri, "volunteers", "service_started", {"volunteer_id": "v1"}, need_id=need["id"])
    assigned = publish_event(uri, "dispatch", "order_assigned", {"volunteer_id": "v1", "user_id": "u1"},
                             need_id=need["id"])
    publish_event(uri, "dispatch", "order_assigned", {}, need_id=need["id"], event=assigned)  # redelivered

    def in_service():
        current = needs.get_need(resident, need["id"])
        return current if current["status"] == "in_service" else None

    current = wait_for(in_service, timeout=15, message="need in service")
    assert [h["status"] for h in current["history"]] == ["submitted", "dispatching", "assigned", "in_service"]
    assert current["volunteer_id"] == "v1"


def test_an_event_that_keeps_failing_is_dead_lettered_not_dropped(needs, infrastructure):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    event = publish_event(uri, "dispatch", "order_assigned", {"volunteer_id": "v9"}, need_id="no-such-need")

    def dead_letters():
        with Connection(uri) as conn:
            channel = conn.channel()
            message = channel.basic_get("lastmile.dead.needs", no_ack=False)
            if message is None:
                return None
            body = message.body if isinstance(message.body, bytes) else message.body.encode()
            channel.basic_reject(message.delivery_tag, requeue=True)
            return body

    body = wait_for(dead_letters, timeout=20, interval=0.3, message="a dead letter")
    assert event["event_id"].encode() in body


def test_cancel_is_refused_once_in_service_and_allowed_by_owner_before(needs, site_tree):
    resident = actor("resident")
    need = needs.submit_need(resident, need_body(site_tree))["need"]
    with pytest.raises(NotFound):
        needs.cancel_need(actor("resident"), need["id"], {})  # someone else's need
    cancelled = needs.cancel_need(resident, need["id"], {"reason": "不需要了"})
    assert cancelled["status"] == "cancelled"
    with pytest.raises(Conflict):
        needs.approve_need(actor("staff", site_tree["district"]), need["id"], {})


def test_contact_is_masked_for_staff_of_no_concern_and_visible_to_owner(needs, site_tree):
    resident = actor("resident")
    need = needs.submit_need(resident, need_body(site_tree))["need"]
    assert need["contact_phone"] == "13700000001"
    volunteer_view = needs.list_needs(actor("volunteer"), {})
    assert volunteer_view["total"] == 0
    staff_view = needs.get_need(actor("staff", site_tree["station"]), need["id"])
    assert staff_view["contact_phone"] == "13700000001"


def test_the_menu_of_a_station_is_its_own_its_institutes_and_its_districts(needs, site_tree):
    staff = actor("staff", site_tree["district"])
    made = {}
    for key in ("district", "institute", "station", "other_station", "other_institute"):
        made[key] = needs.create_project(staff, {"name": f"项目 {key}", "category": "culture",
                                                 "site_id": site_tree[key], "team_name": "志愿服务队"})
    menu = needs.list_projects({"site_id": site_tree["station"]})
    assert {p["id"] for p in menu} == {made["district"]["id"], made["institute"]["id"], made["station"]["id"]}
    assert needs.list_projects({"site_id": site_tree["station"], "category": "health"}) == []

    resident = actor("resident")
    ordered = needs.submit_need(resident, need_body(site_tree, category=None, project_id=made["institute"]["id"]))
    assert ordered["need"]["category"] == "culture" and ordered["need"]["project_id"] == made["institute"]["id"]
    with pytest.raises(InvalidInput) as caught:
        needs.submit_need(resident, need_body(site_tree, project_id=made["other_station"]["id"]))
    assert "project_id" in caught.value.details


def test_projects_are_edited_by_staff_of_their_site_or_above(needs, site_tree):
    district_staff = actor("staff", site_tree["district"])
    project = needs.create_project(district_staff, {"name": "益·老爸茶宣讲", "category": "theory",
                                                    "site_id": site_tree["district"]})
    with pytest.raises(Forbidden):
        needs.update_project(actor("staff", site_tree["station"]), project["id"], {"active": False})
    with pytest.raises(Forbidden):
        needs.create_project(actor("staff", site_tree["station"]), {"name": "越权项目", "category": "theory",
                                                                   "site_id": site_tree["institute"]})
    retired = needs.update_project(district_staff, project["id"], {"active": False})
    assert retired["active"] is False
    assert project["id"] not in {p["id"] for p in needs.list_projects({"site_id": site_tree["station"]})}


def test_a_collector_orders_for_a_resident_and_follows_what_they_registered(needs, site_tree):
    collector = actor("collector", site_tree["institute"])
    on_behalf = {"name": "黄阿婆", "phone": "13700000009"}
    need = needs.submit_need(collector, need_body(site_tree, contact_phone="13700000009",
                                                  on_behalf_of=on_behalf))["need"]
    assert need["channel"] == "collector" and need["collector_id"] == collector["id"]
    assert need["contact_name"] == "黄阿婆" and need["contact_phone"] == "13700000009"
    assert [n["id"] for n in needs.list_needs(collector, {})["items"]] == [need["id"]]
    assert needs.list_needs(actor("collector", site_tree["institute"]), {})["total"] == 0
    with pytest.raises(InvalidInput):
        needs.submit_need(collector, need_body(site_tree))  # for whom?
    with pytest.raises(Forbidden):
        needs.submit_need(actor("resident"), need_body(site_tree, on_behalf_of=on_behalf))
    assert needs.cancel_need(collector, need["id"], {"reason": "阿婆住院了"})["status"] == "cancelled"


def test_a_repeat_of_an_open_need_is_accepted_but_marked(needs, site_tree):
    first = needs.submit_need(actor("resident"), need_body(site_tree))["need"]
    again = needs.submit_need(actor("resident"), need_body(site_tree, title="再次请求量血压"))["need"]
    other = needs.submit_need(actor("resident"), need_body(site_tree, category="culture"))["need"]
    assert first["possible_duplicate"] is False and again["possible_duplicate"] is True
    assert other["possible_duplicate"] is False


def test_a_station_can_approve_needs_automatically(needs, site_tree, tap):
    with pytest.raises(Forbidden):
        needs.update_site(actor("staff", site_tree["other_institute"]), site_tree["station"], {"auto_approve": True})
    needs.update_site(actor("staff", site_tree["institute"]), site_tree["station"], {"auto_approve": True})
    need = needs.submit_need(actor("resident"), need_body(site_tree))["need"]
    assert need["status"] == "dispatching"
    assert [(h["status"], h["by"]) for h in need["history"]] == [("submitted", need["owner_id"]),
                                                                 ("dispatching", "system")]
    tap.wait("need_approved", need["id"])


def test_listing_filters_pages_and_sorts_newest_first(needs, site_tree):
    resident = actor("resident")
    ids = [needs.submit_need(resident, need_body(site_tree, title=f"第{i}件事", category=c))["need"]["id"]
           for i, c in enumerate(["health", "culture", "health"])]
    needs.submit_need(resident, need_body(site_tree, site_id=site_tree["far_station"], title="远处的事"))
    staff = actor("staff", site_tree["institute"])
    listed = needs.list_needs(staff, {"page_size": 2})
    assert listed["total"] == 3 and [n["id"] for n in listed["items"]] == ids[::-1][:2]
    assert needs.list_needs(staff, {"page": 2, "page_size": 2})["items"][0]["id"] == ids[0]
    assert needs.list_needs(staff, {"category": "culture"})["total"] == 1
    assert needs.list_needs(staff, {"q": "第2件"})["items"][0]["id"] == ids[2]
    assert needs.list_needs(staff, {"status": "rejected"})["total"] == 0
    assert needs.list_needs(actor("staff", site_tree["district"]), {"site_id": site_tree["far_station"]})["total"] == 1
    with pytest.raises(InvalidInput):
        needs.list_needs(staff, {"page_size": 101})


def test_the_beneficiary_registry_counts_per_station_and_masks_named_residents(needs, site_tree):
    collector = actor("collector", site_tree["institute"])
    needs.set_beneficiary_count(collector, site_tree["station"], {"group": "left_behind_child", "count": 12})
    needs.set_beneficiary_count(collector, site_tree["other_station"], {"group": "left_behind_child", "count": 3})
    summary = needs.set_beneficiary_count(collector, site_tree["station"], {"group": "elderly_alone", "count": 5})
    assert summary["total"] == 17
    entry = needs.add_beneficiary_entry(collector, site_tree["station"], {
        "group": "elderly_alone", "name": "林大爷", "phone": "13700001234", "id_number": "460100194501011234"})
    assert entry["phone"] == "137****1234" and entry["id_number"] == "460*************34"

    counted = needs.beneficiaries(actor("staff", site_tree["institute"]), site_tree["institute"])
    assert counted["by_group"]["left_behind_child"] == 15 and counted["total"] == 20
    assert {row["site_id"]: row["total"] for row in counted["by_site"]} == {
        site_tree["station"]: 17, site_tree["other_station"]: 3}
    assert counted["entries"][0]["id_number"] == "460100194501011234"  # staff see it whole
    assert needs.beneficiaries(collector, site_tree["station"])["entries"][0]["phone"] == "137****1234"

    with pytest.raises(Forbidden):
        needs.beneficiaries(actor("collector", site_tree["other_institute"]), site_tree["station"])
    with pytest.raises(InvalidInput):
        needs.set_beneficiary_count(collector, site_tree["institute"], {"group": "disabled", "count": 1})
    with pytest.raises(InvalidInput) as caught:
        needs.add_beneficiary_entry(collector, site_tree["station"], {"group": "disabled", "name": "x",
                                                                     "id_number": "12345"})
    assert "id_number" in caught.value.details


def test_an_unfilled_need_is_listed_for_staff_and_reopens_when_dispatched_by_hand(needs, infrastructure, site_tree):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    resident = actor("resident")
    need = needs.submit_need(resident, need_body(site_tree))["need"]
    needs.approve_need(actor("staff", site_tree["station"]), need["id"], {})
    publish_event(uri, "dispatch", "order_unfilled", {"order_id": "o1"}, need_id=need["id"])
    for staff_site in ("station", "institute"):
        staff = actor("staff", site_tree[staff_site])
        unfilled = wait_for(lambda: needs.list_needs(staff, {"status": "unfilled"})["items"], timeout=10,
                            message="the unfilled need")
        assert [n["id"] for n in unfilled] == [need["id"]]
    publish_event(uri, "dispatch", "order_reopened", {"by": "staff"}, need_id=need["id"])
    reopened = wait_for(lambda: (lambda n: n if n["status"] == "dispatching" else None)(
        needs.get_need(resident, need["id"])), timeout=10, message="the need dispatching again")
    assert [h["status"] for h in reopened["history"]] == ["submitted", "dispatching", "unfilled", "dispatching"]
