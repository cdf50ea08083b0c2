"""A poison message is retried, parked, listed and replayed after the fix — and
does not hold up the messages behind it."""
import pytest
from nameko.containers import ServiceContainer

from lastmile import config
from lastmile.consumer import event_handler
from lastmile.deadletters import list_dead_letters, replay
from tests.support import publish_event, wait_for

handled = []
broken = {"on": True}


class Flaky:
    name = "flaky"

    @event_handler("needs", "need_submitted")
    def remember(self, event):
        if broken["on"] and event["data"].get("poison"):
            raise RuntimeError("cannot handle this one yet")
        handled.append(event["event_id"])


@pytest.fixture
def flaky(infrastructure):
    container = ServiceContainer(Flaky, config.nameko_config())
    container.start()
    yield infrastructure["LASTMILE_AMQP_URI"]
    container.stop()


def test_a_poison_message_is_parked_then_replayed_after_the_fix(flaky):
    uri = flaky
    poison = publish_event(uri, "needs", "need_submitted", {"poison": True}, need_id="n-poison")
    healthy = [publish_event(uri, "needs", "need_submitted", {"n": i}, need_id=f"n-{i}") for i in range(5)]
    wait_for(lambda: {e["event_id"] for e in healthy} <= set(handled), timeout=5,
             message="the healthy messages behind the poison one")

    # LASTMILE_EVENT_RETRY_DELAYS is 1,1,2 in tests: parked after about 4 s.
    letters = wait_for(lambda: [d for d in list_dead_letters(uri, ["flaky"]) if d["event_id"] == poison["event_id"]],
                       timeout=20, interval=0.5, message="the dead letter")
    assert letters[0]["attempts"] == 4 and "cannot handle" in letters[0]["error"]
    assert letters[0]["handler_queue"] == "evt-needs-need_submitted--flaky.remember"
    assert poison["event_id"] not in handled
    assert list_dead_letters(uri, ["flaky"]) == letters  # listing leaves them parked

    broken["on"] = False
    assert [r["event_id"] for r in replay(uri, ["flaky"])] == [poison["event_id"]]
    wait_for(lambda: poison["event_id"] in handled, timeout=10, message="the replayed event to be handled")
    assert list_dead_letters(uri, ["flaky"]) == []
