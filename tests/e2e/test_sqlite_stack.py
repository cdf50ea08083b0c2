"""`make run` without a database server: the whole stack on one SQLite file per service,
as the README's first command starts it, loads the demo data and takes a need through
its first steps."""
import os

import pytest
import requests

from tests.conftest import isolated_environment
from tests.e2e.conftest import free_port, running_stack
from tests.support import wait_for

ADMIN_PHONE, ADMIN_PASSWORD = "13800000000", "sqlite-admin-password"


@pytest.fixture(scope="module")
def sqlite_stack(tmp_path_factory):
    with isolated_environment(tmp_path_factory) as isolated:
        port = free_port()
        env = dict(os.environ, **isolated)
        env.pop("LASTMILE_DATABASE_URL")  # unset: SQLite files in LASTMILE_DATA_DIR
        env.update({"LASTMILE_PORT": str(port), "LASTMILE_ADMIN_PHONE": ADMIN_PHONE,
                    "LASTMILE_ADMIN_PASSWORD": ADMIN_PASSWORD})
        with running_stack(env, "--demo") as (_, output):
            assert any("Demo data loaded" in line for line in output), "".join(output)
            yield f"http://127.0.0.1:{port}/api/v1"


def token(api, phone, password):
    response = requests.post(f"{api}/auth/token", json={"phone": phone, "password": password}, timeout=15)
    assert response.status_code == 200, response.text
    return {"Authorization": "Bearer " + response.json()["access_token"]}


def test_the_demo_loads_and_a_need_is_submitted_approved_and_offered(sqlite_stack):
    api = sqlite_stack
    admin = token(api, ADMIN_PHONE, ADMIN_PASSWORD)
    phone = "13700001111"
    assert requests.post(f"{api}/auth/register", json={"phone": phone, "password": "resident-pass", "name": "王阿姨",
                                                       "role": "resident"}, timeout=15).status_code == 201
    resident = token(api, phone, "resident-pass")  # a login right after a registration's event
    need = requests.post(f"{api}/needs", headers=resident, timeout=15, json={
        "category": "health", "title": "上门量血压", "site_id": "qiongshan.fucheng.zhongshan", "address": "中山路12号",
        "contact_phone": phone, "beneficiary_group": "elderly_alone", "beneficiaries": 1})
    assert need.status_code == 201, need.text
    need_id = need.json()["id"]
    approved = requests.post(f"{api}/needs/{need_id}/approve", headers=admin, timeout=15)
    assert approved.status_code == 200, approved.text

    def offered():
        order = requests.get(f"{api}/needs/{need_id}/order", headers=admin, timeout=15)
        return order.status_code == 200 and order.json()["offers"]

    wait_for(offered, timeout=20, message="dispatch to offer the need to a demo volunteer")

    def logged():
        items = requests.get(f"{api}/events", headers=admin, params={"limit": 500}, timeout=15).json()["items"]
        return {"need_submitted", "need_approved", "offer_made"} <= {e["type"] for e in items if e["need_id"] == need_id}

    wait_for(logged, timeout=20, message="the gateway's event log to hold the need's events")
