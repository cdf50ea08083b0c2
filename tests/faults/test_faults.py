"""Nothing lost: a few hundred complete cycles through the gateway while, in turn,
every service is killed with SIGKILL and restarted, RabbitMQ and PostgreSQL are
restarted, and a replica is added and removed. Afterwards every need must be in
the state its history says, each service must have happened once, hours must be
credited once per service and each rating counted once.

``LASTMILE_FAULT_CYCLES`` sets the number of cycles (default 200); cycles go on past it
until every fault has been injected once."""
import os
import random
import signal
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import eventlet
import pytest
import requests

from tests.conftest import isolated_environment
from tests.e2e.conftest import ROOT, Client, free_port

CYCLES = int(os.environ.get("LASTMILE_FAULT_CYCLES", "200"))
WORKERS = 10
PASSWORD = "fault-suite-password"
ADMIN_PHONE, ADMIN_PASSWORD = "13800000000", "fault-admin-password"
FULL_HISTORY = ["submitted", "dispatching", "assigned", "in_service", "completed", "rated"]
BACKENDS = ("needs", "dispatch", "volunteers", "ratings")

pytestmark = pytest.mark.skipif(not (shutil.which("rabbitmqctl") and shutil.which("pg_ctlcluster")),
                                reason="the fault suite restarts the machine's RabbitMQ and PostgreSQL")


def runners(prefix, service=None):
    """PIDs of this stack's service processes (matched by their database prefix)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"lastmile.runner" in cmdline and f"LASTMILE_DATABASE_PREFIX={prefix}".encode() in environ:
            if service is None or service.encode() in cmdline:
                found.append(int(entry.name))
    return found


class Faults:
    def __init__(self, stack):
        self.stack = stack
        self.prefix = stack["env"]["LASTMILE_DATABASE_PREFIX"]
        self.injected = []
        self.extra = None

    def kill(self, service):
        pids = runners(self.prefix, service)
        if pids:
            os.kill(random.choice(pids), signal.SIGKILL)
            self.injected.append(f"SIGKILL {service}")

    def restart_rabbitmq(self):
        subprocess.run(["rabbitmqctl", "stop_app"], capture_output=True, timeout=120)
        subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, timeout=120)
        self.injected.append("restart RabbitMQ")

    def restart_postgresql(self):
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
                       capture_output=True, timeout=120)
        self.injected.append("restart PostgreSQL")

    def add_replica(self, service="dispatch"):
        log = open(Path(self.stack["env"]["LASTMILE_DATA_DIR"]) / f"extra-{service}.log", "ab")
        self.extra = subprocess.Popen([sys.executable, "-m", "lastmile.runner", service], cwd=ROOT,
                                      env=self.stack["env"], stdout=log, stderr=subprocess.STDOUT)
        self.injected.append(f"add a {service} replica")

    def remove_replica(self):
        if self.extra is not None:
            self.extra.send_signal(signal.SIGTERM)
            self.extra.wait(timeout=30)
            self.extra = None
            self.injected.append("remove the added replica")

    def schedule(self):
        return [lambda: self.kill("needs"), self.restart_postgresql, lambda: self.kill("dispatch"), self.add_replica,
                lambda: self.kill("volunteers"), self.restart_rabbitmq, lambda: self.kill("ratings"),
                self.remove_replica, lambda: self.kill("gateway"), lambda: self.kill("notifications")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with isolated_environment(tmp_path_factory) as isolated:
        port = free_port()
        env = dict(os.environ)
        env.update(isolated)
        env.update({
            "LASTMILE_PORT": str(port), "LASTMILE_ADMIN_PHONE": ADMIN_PHONE, "LASTMILE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "LASTMILE_HOURS_MINIMUM_MINUTES": "0", "LASTMILE_HOURS_STEP_MINUTES": "0.001",
            "LASTMILE_RATE_LIMIT": "0", "LASTMILE_RPC_TIMEOUT": "10",
            # Long enough retries to outlast a broker or database restart.
            "LASTMILE_EVENT_RETRY_DELAYS": "1,2,4,8,15,30,30",
        })
        replicas = [arg for name in BACKENDS for arg in ("--replicas", f"{name}=2")]
        process = subprocess.Popen([sys.executable, "-m", "lastmile.stack", "--ready-timeout", "120", *replicas],
                                   cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "is ready" in line:
                break
        else:
            raise RuntimeError("the stack did not start:\n" + "".join(lines))
        yield {"base": f"http://127.0.0.1:{port}", "api": f"http://127.0.0.1:{port}/api/v1", "env": env}
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


class Tally:
    def __init__(self):
        self.cycles_started = 0
        self.cycles_done = 0
        self.transient = {}  # status code or error name -> count, answers worth a retry
        self.unexpected = []

    def transient_answer(self, what):
        self.transient[what] = self.transient.get(what, 0) + 1


def patient(tally, attempt, done, seconds=120):
    """Call ``attempt`` until ``done(response)`` says it worked (True) or was
    already done (also True); retry what a fault causes (connection errors, 5xx,
    429), and record anything else."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            response = attempt()
        except requests.RequestException as exc:
            tally.transient_answer(type(exc).__name__)
            eventlet.sleep(0.5)
            continue
        if response.status_code >= 500 or response.status_code == 429:
            tally.transient_answer(response.status_code)
            eventlet.sleep(0.5)
            continue
        outcome = done(response)
        if outcome:
            return response
        eventlet.sleep(0.2)
    tally.unexpected.append(f"gave up: {attempt}")
    return None


def status_is(client, need_id, *statuses):
    return lambda: client.get(f"/needs/{need_id}"), lambda r: r.status_code == 200 and r.json()["status"] in statuses


def run_cycle(tally, resident, volunteer, staff, station):
    tally.cycles_started += 1
    key = uuid.uuid4().hex
    body = {"category": "health", "title": "故障演练中的上门服务", "site_id": station, "address": "演练路1号",
            "contact_phone": resident.phone, "beneficiary_group": "general", "beneficiaries": 1}
    submitted = patient(tally, lambda: resident.post("/needs", json=body, headers={"Idempotency-Key": key}),
                        lambda r: r.status_code in (200, 201))
    if submitted is None:
        return None
    need_id = submitted.json()["id"]
    patient(tally, lambda: staff.post(f"/needs/{need_id}/approve"), lambda r: r.status_code in (200, 409))
    offer = patient(tally, lambda: volunteer.get("/offers", params={"status": "pending"}),
                    lambda r: r.status_code == 200 and any(o["need_id"] == need_id for o in r.json()["items"]))
    if offer is not None:
        offer_id = next(o["id"] for o in offer.json()["items"] if o["need_id"] == need_id)
        patient(tally, lambda: volunteer.post(f"/offers/{offer_id}/accept"), lambda r: r.status_code in (200, 409))
    patient(tally, *status_is(resident, need_id, "assigned", "in_service", "completed", "rated"))
    patient(tally, lambda: volunteer.post(f"/needs/{need_id}/check-in", json={}),
            lambda r: r.status_code == 200 or (r.status_code == 409 and "already" in r.json()["error"]["message"]))
    patient(tally, *status_is(resident, need_id, "in_service", "completed", "rated"))
    patient(tally, lambda: volunteer.post(f"/needs/{need_id}/check-out",
                                          json={"summary": "演练完成", "beneficiaries_served": 1}),
            lambda r: r.status_code == 200 or (r.status_code == 409 and "check-out" in r.json()["error"]["message"]))
    patient(tally, *status_is(resident, need_id, "completed", "rated"))
    patient(tally, lambda: resident.post(f"/needs/{need_id}/rating", json={"stars": 4}),
            lambda r: r.status_code == 201 or (r.status_code == 409 and "already" in r.json()["error"]["message"]))
    patient(tally, *status_is(resident, need_id, "rated"))
    tally.cycles_done += 1
    return need_id


def account(anonymous, admin, role, name, site_id=None):
    phone = "13" + str(uuid.uuid4().int)[:9]
    if role in ("resident", "volunteer"):
        response = anonymous.post("/auth/register", json={"phone": phone, "password": PASSWORD, "name": name,
                                                          "role": role})
    else:
        response = admin.post("/accounts", json={"phone": phone, "password": PASSWORD, "name": name, "role": role,
                                                 "site_id": site_id})
    assert response.status_code == 201, response.text
    client = anonymous.login(phone, PASSWORD)
    client.phone = phone
    return client


def test_nothing_is_lost_or_doubled_while_everything_fails_in_turn(stack):
    anonymous = Client(stack["api"])
    admin = anonymous.login(ADMIN_PHONE, ADMIN_PASSWORD)
    district = "faults" + uuid.uuid4().hex[:6]
    admin.post("/sites", json={"id": district, "name": "演练区"})
    admin.post("/sites", json={"id": f"{district}.town", "name": "演练镇"})
    staff = account(anonymous, admin, "staff", "演练所", f"{district}.town")
    crews = []
    for n in range(WORKERS):
        station = f"{district}.town.s{n}"
        assert admin.post("/sites", json={"id": station, "name": f"演练站{n}"}).status_code == 201
        volunteer = account(anonymous, admin, "volunteer", f"志愿者{n}")
        profile = volunteer.post("/volunteers", json={"name": f"志愿者{n}", "skills": ["health"], "site_id": station})
        assert profile.status_code == 201, profile.text
        volunteer.profile = profile.json()
        crews.append((account(anonymous, admin, "resident", f"居民{n}"), volunteer, station))

    tally, faults, needs = Tally(), Faults(stack), {}
    remaining = [CYCLES]
    every_fault_injected = [False]  # however fast the cycles go, each fault meets some of them

    def more_cycles():
        return remaining[0] > 0 or not every_fault_injected[0]

    def crew(resident, volunteer, station):
        while more_cycles():
            remaining[0] -= 1
            need_id = run_cycle(tally, resident, volunteer, staff, station)
            if need_id:
                needs[need_id] = (volunteer, resident)

    pool = eventlet.GreenPool(WORKERS + 1)
    for resident, volunteer, station in crews:
        pool.spawn(crew, resident, volunteer, station)

    started = time.monotonic()
    schedule = faults.schedule()
    while more_cycles() or pool.running() > 0:
        eventlet.sleep(5)
        if more_cycles():
            if not schedule:
                schedule = faults.schedule()
            schedule.pop(0)()
            every_fault_injected[0] = every_fault_injected[0] or not schedule
    faults.remove_replica()
    elapsed = time.monotonic() - started

    # What each need, volunteer and score says, once everything has settled.
    lost, duplicated = [], []
    for need_id, (volunteer, resident) in needs.items():
        need = patient(tally, lambda: admin.get(f"/needs/{need_id}"), lambda r: r.status_code == 200).json()
        history = [h["status"] for h in need["history"]]
        if need["status"] != "rated" or history != FULL_HISTORY:
            lost.append((need_id, need["status"], history))
    for resident, volunteer, station in crews:
        served = [n for n, (v, _) in needs.items() if v is volunteer]
        hours = patient(tally, lambda: admin.get(f"/volunteers/{volunteer.profile['id']}/hours"),
                        lambda r: r.status_code == 200).json()
        credited = [r["need_id"] for r in hours["records"] if r["kind"] == "checked_in"]
        duplicated += [n for n in set(credited) if credited.count(n) > 1]
        lost += [n for n in served if n not in credited]
        score = patient(tally, lambda: admin.get(f"/volunteers/{volunteer.profile['id']}/score"),
                        lambda r: r.status_code == 200).json()
        if score["count"] != len(served):
            duplicated.append((volunteer.profile["id"], "ratings counted", score["count"], "for", len(served)))

    print(f"\nfault suite: {tally.cycles_done} cycles (at least {CYCLES}) completed in {elapsed:.0f} s; "
          f"{len(faults.injected)} faults injected: {', '.join(faults.injected)}")
    print(f"fault suite: answers retried during faults: {tally.transient}")
    print(f"fault suite: lost {len(lost)}, duplicated {len(duplicated)}, unexpected answers {len(tally.unexpected)}")
    assert len(needs) >= CYCLES and tally.cycles_done == len(needs)
    assert len(faults.injected) >= len(faults.schedule())
    assert lost == [] and duplicated == [] and tally.unexpected == []
