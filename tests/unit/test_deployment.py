"""The container deployment files agree with the code: no docker engine needed."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lastmile import config, topology

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
BACKENDS = sorted(set(topology.SERVICES) - {"gateway"})


@pytest.fixture(scope="module")
def compose():
    # safe_load resolves the YAML anchors and `<<` merge keys, as Compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def lastmile_services(compose):
    """The services built from this repository's Dockerfile, by name."""
    return {name: spec for name, spec in compose["services"].items() if "build" in spec}


def environment(spec):
    env = spec.get("environment") or {}
    if isinstance(env, list):  # the ["NAME=value", ...] form
        env = dict(item.partition("=")[::2] for item in env)
    return env


def test_every_service_has_a_healthcheck(compose):
    for name, spec in compose["services"].items():
        assert spec.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_every_lastmile_service_is_deployed(lastmile_services):
    commands = sorted(spec["command"][0] for spec in lastmile_services.values())
    assert commands == sorted(topology.SERVICES)


def test_each_command_names_a_service_of_the_topology(lastmile_services):
    for name, spec in lastmile_services.items():
        command = spec["command"]
        assert isinstance(command, list) and len(command) == 1, f"{name}: command {command!r}"
        assert command[0] in topology.SERVICES, f"{name} runs unknown service {command[0]!r}"
        assert command[0] == name, f"compose service {name} runs {command[0]!r}"


def test_each_healthcheck_asks_its_own_service(lastmile_services):
    for name, spec in lastmile_services.items():
        assert spec["healthcheck"]["test"] == ["CMD", "python", "-m", "lastmile.healthcheck", name]


def test_each_lastmile_service_sets_every_variable(lastmile_services):
    for name, spec in lastmile_services.items():
        missing = sorted(set(config.VARIABLES) - set(environment(spec)))
        assert not missing, f"{name} does not set {missing}"
        unknown = sorted(k for k in environment(spec) if k.startswith("LASTMILE_") and k not in config.VARIABLES)
        assert not unknown, f"{name} sets variables the code never reads: {unknown}"


def test_substitution_defaults_match_the_code(lastmile_services):
    """`NAME: ${NAME:-default}` must default to what lastmile/config.py would use."""
    deliberate = {"LASTMILE_ADMIN_PHONE"}  # a sample first admin, inert without a password
    for name, spec in lastmile_services.items():
        for key, value in environment(spec).items():
            match = re.fullmatch(r"\$\{(\w+):-(.*)\}", str(value))
            if match and match.group(1) == key and key not in deliberate:
                assert match.group(2) == config.VARIABLES[key][0], f"{name}: {key} defaults to {match.group(2)!r}"


def test_lastmile_services_wait_for_healthy_infrastructure(lastmile_services):
    for name, spec in lastmile_services.items():
        for dependency in ("rabbitmq", "postgres"):
            assert spec["depends_on"][dependency] == {"condition": "service_healthy"}, f"{name} -> {dependency}"


def test_gateway_depends_on_the_backend_services(lastmile_services):
    depends_on = lastmile_services["gateway"]["depends_on"]
    for backend in BACKENDS:
        assert depends_on.get(backend) == {"condition": "service_healthy"}, f"gateway -> {backend}"


def test_gateway_publishes_its_container_port(lastmile_services):
    gateway = lastmile_services["gateway"]
    assert environment(gateway)["LASTMILE_PORT"] == "8000"
    assert gateway["ports"] == ["${LASTMILE_PORT:-8000}:8000"]


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not on PATH (Debian: apt-get install docker-compose); the YAML checks still ran",
)
def test_docker_compose_accepts_the_file():
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


# ---- lastmile.healthcheck, run as the container runs it ----------------------------------


def run_healthcheck(service, **env):
    import json
    import os
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "lastmile.healthcheck", service],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=30,
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout + result.stderr
    return result.returncode, json.loads(lines[0])


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthcheck_passes_when_the_gateway_answers():
    import http.server
    import threading

    class Healthz(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"status": "ok"}' if self.path == "/healthz" else b"{}"
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code, report = run_healthcheck("gateway", LASTMILE_PORT=str(server.server_port))
    finally:
        server.shutdown()
    assert (code, report) == (0, {"service": "gateway", "ok": True, "answer": {"status": "ok"}})


def test_healthcheck_fails_when_the_gateway_is_down():
    code, report = run_healthcheck("gateway", LASTMILE_PORT=str(free_port()))
    assert code == 1 and report["ok"] is False and report["error"]


def test_healthcheck_fails_when_the_broker_is_unreachable():
    code, report = run_healthcheck("needs", LASTMILE_AMQP_URI=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert code == 1 and report == {"service": "needs", "ok": False, "error": report["error"]}
