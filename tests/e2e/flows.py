"""What e2e tests do again and again: register, submit, wait for a status or an offer."""
import random

from tests.support import wait_for

PASSWORD = "a-good-password"


def unique_phone(prefix="139"):
    return prefix + "".join(random.choice("0123456789") for _ in range(8))


def register(anonymous, role, name):
    phone = unique_phone("137" if role == "resident" else "139")
    response = anonymous.post("/auth/register", json={"phone": phone, "password": PASSWORD, "name": name, "role": role})
    assert response.status_code == 201, response.text
    assert response.json()["role"] == role and "password" not in response.text
    return anonymous.login(phone, PASSWORD), phone


def wait_status(client, need_id, status, timeout=15):
    def reached():
        need = client.get(f"/needs/{need_id}").json()
        return need if need["status"] == status else None

    return wait_for(reached, timeout, interval=0.1, message=f"need {need_id} {status}")


def submit(resident, station, **overrides):
    body = {"category": "health", "title": "上门量血压", "description": "独居老人，需要每周量一次血压",
            "site_id": station, "address": "红旗镇本立村3号", "contact_phone": "13700000001",
            "beneficiary_group": "elderly_alone", "beneficiaries": 1}
    body.update(overrides)
    response = resident.post("/needs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def pending_offer(volunteer, need_id):
    def offered():
        items = volunteer.get("/offers", params={"status": "pending"}).json()["items"]
        return next((offer for offer in items if offer["need_id"] == need_id), None)

    return wait_for(offered, 15, interval=0.1, message="an offer")
