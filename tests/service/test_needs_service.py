"""The needs service on the real broker and database, driven by RPC and by the
events other services would publish."""
import pytest
from kombu import Connection

from lastmile.errors import Conflict, InvalidInput, NotFound
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
