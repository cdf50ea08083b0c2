"""Start the whole stack as separate processes, exactly as ``make run`` does, and
drive it over HTTP."""
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.conftest import isolated_environment
from tests.e2e.flows import PASSWORD, register, unique_phone
from tests.support import EventTap

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PHONE = "13800000000"
ADMIN_PASSWORD = "e2e-admin-password"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Client:
    """A thin requests wrapper that remembers a bearer token."""

    def __init__(self, base, token=None):
        self.base = base
        self.token = token
        self.http = requests.Session()

    def request(self, method, path, **kwargs):
        headers = kwargs.pop("headers", {})
        if self.token:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        return self.http.request(method, self.base + path, headers=headers, timeout=15, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def patch(self, path, **kwargs):
        return self.request("PATCH", path, **kwargs)

    def login(self, phone, password):
        response = self.post("/auth/token", json={"phone": phone, "password": password})
        assert response.status_code == 200, response.text
        return Client(self.base, response.json()["access_token"])


@pytest.fixture(scope="package")
def stack_environment(tmp_path_factory):
    # Its own virtual host and databases: service tests running later in the same
    # session must not share queues with the stack's consumers.
    with isolated_environment(tmp_path_factory) as env:
        yield env


@pytest.fixture(scope="package")
def stack(stack_environment):
    port = free_port()
    env = dict(os.environ)
    env.update(stack_environment)
    env.update({
        "LASTMILE_PORT": str(port),
        "LASTMILE_ADMIN_PHONE": ADMIN_PHONE,
        "LASTMILE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # Seconds-long services must earn measurable hours in a test.
        "LASTMILE_HOURS_MINIMUM_MINUTES": "0",
        "LASTMILE_HOURS_STEP_MINUTES": "0.02",
        # Tests poll quickly from one address; the limit itself is tested in tests/service/test_gateway.py.
        "LASTMILE_RATE_LIMIT": "0",
        # A loaded test machine can be slower than the 1.8 s a district's server is given.
        "LASTMILE_RPC_TIMEOUT": "10",
    })
    base = f"http://127.0.0.1:{port}"
    with running_stack(env, "--demo") as (process, _):
        yield {"base": base, "api": base + "/api/v1", "env": env, "process": process}


@contextmanager
def running_stack(env, *args):
    """``python -m lastmile.stack`` with ``args``, from the moment it is ready until the
    end of the block: (the process, the lines it printed until then)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lastmile.stack", "--ready-timeout", "120", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 150
    output = []
    while True:
        line = process.stdout.readline()
        output.append(line)
        if "is ready" in line:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the stack did not start:\n" + "".join(output))
    try:
        yield process, output
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="package")
def anonymous(stack):
    return Client(stack["api"])


@pytest.fixture(scope="package")
def admin(anonymous):
    return anonymous.login(ADMIN_PHONE, ADMIN_PASSWORD)


@pytest.fixture
def tap(stack):
    tap = EventTap(stack["env"]["LASTMILE_AMQP_URI"])
    yield tap
    tap.close()


@pytest.fixture
def station(admin):
    """A fresh station in the demo tree, so that this test's volunteer is its only one."""
    site_id = "qiongshan.hongqi.e2e" + uuid.uuid4().hex[:6]
    response = admin.post("/sites", json={"id": site_id, "name": "测试站", "lat": 19.79, "lon": 110.49})
    assert response.status_code == 201, response.text
    return site_id


@pytest.fixture
def staff(admin, anonymous):
    phone = unique_phone("138")
    response = admin.post("/accounts", json={"phone": phone, "password": PASSWORD, "name": "红旗镇实践所",
                                             "role": "staff", "site_id": "qiongshan.hongqi"})
    assert response.status_code == 201, response.text
    return anonymous.login(phone, PASSWORD)


@pytest.fixture
def volunteer(anonymous, station):
    client, phone = register(anonymous, "volunteer", "志愿者小符")
    response = client.post("/volunteers", json={"name": "志愿者小符", "skills": ["health"], "site_id": station,
                                                 "lat": 19.79, "lon": 110.49, "phone": phone})
    assert response.status_code == 201, response.text
    client.profile = response.json()
    return client
