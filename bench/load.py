"""Lastmile under load, measured beside a bare nameko stack on the same machine.

    .venv/bin/python -m bench.load [--duration 15] [--clients 20] [--rate 50] [--stations 40]
                                   [--profile] [--out bench/results/load.json]

It starts, each in a RabbitMQ virtual host and PostgreSQL databases of its own
(removed at the end), the whole Lastmile stack (``python -m lastmile.stack``) and
the baseline of ``bench/baseline/services.py`` (an HTTP entrypoint, one RPC that
writes one row and dispatches one event, a handler that writes one row). Both
stay up together, and each figure is measured on the baseline and then on
Lastmile straight after, so that the ratio of the two holds on a busy machine.
The load comes from this process (asyncio and aiohttp) over real HTTP:

- ``POST /needs``: ``--clients`` connections, each sending the next request as soon
  as the last is answered, for ``--duration`` seconds: requests answered per
  second and their latency (baseline: ``POST /writes``);
- cycles: ``--clients`` clients, each running whole cycles one after another —
  submit, approve, wait for the offer in ``GET /offers``, accept, check in (once
  the volunteers service knows the assignment), check out, rate (once the ratings
  service knows the service was completed). The baseline's cycle has the same
  shape: six writes, with a wait for the event's row after the second, fourth
  and fifth;
- approval to offer: needs submitted beforehand are approved at ``--rate`` a
  second, on a fixed schedule whatever the answers; after each approval's answer
  its volunteer polls ``GET /offers`` until the offer is there (first after ``--poll-ms``,
  each pause half as long again as the last, up to a second).
  Two figures: *made*, from the approval (its ``at`` in the need's history) to the
  offer's ``created_at``, both stamped by the services in the transactions that
  make them visible, so the polling neither adds to it nor rounds it; and *seen*,
  from the approval's answer to the first ``GET /offers`` that shows the offer, as
  a volunteer's app polling that often would see it. Baseline: the written row's
  and the event's row's times, and ``GET /effects``;
- replicas: the ``POST /needs`` rate and the cycle rate again after a second
  process of the busiest Lastmile service (the one that used the most CPU time in
  the cycles; the gateway binds the port and is never replicated) and of the
  baseline's writer joined.

It prints one table (figure, Lastmile, baseline, ratio) and writes it with every
latency to ``--out`` (JSON) and a plot beside it (PNG). ``--profile`` also records
the gateway, needs and dispatch with py-spy during the cycles (SVG flame graphs
beside the JSON).
"""
import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import aiohttp
import sqlalchemy as sa

from bench import percentile

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ADMIN_PHONE, ADMIN_PASSWORD = "13800000000", "bench-admin-password"
PASSWORD = "bench-password"
DISTRICT, INSTITUTE = "bench", "bench.town"
LAT, LON = 20.0, 110.35
NEED_BODY = {"category": "health", "title": "上门量血压", "description": "独居老人，需要量血压",
             "address": "本立村3号", "contact_phone": "13700000001", "beneficiary_group": "elderly_alone",
             "beneficiaries": 1, "lat": LAT, "lon": LON}
OFFER_TIMEOUT = 20  # seconds a single wait may take before it counts as a failure
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def summary_ms(seconds, failed=0):
    """Percentiles in milliseconds; a failed attempt counts as slower than any other
    (a percentile that falls on one is None)."""
    values = list(seconds) + [float("inf")] * failed

    def ms(value):
        return None if value is None or value == float("inf") else round(value * 1000, 1)

    return {f"p{p}": ms(percentile(values, p)) for p in (50, 95, 99)} | {
        "count": len(seconds), "failed": failed, "max": ms(max(seconds)) if seconds else None}


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def failure_kind(exc):
    """A failure's description with its ids taken out, to count failures by kind."""
    return UUID.sub("{id}", str(exc) or type(exc).__name__)[:160]


class Failure(Exception):
    """A request answered with a status the workload did not expect."""


async def call(http, method, url, expect, **kwargs):
    async with http.request(method, url, **kwargs) as response:
        body = await response.read()
        if response.status not in expect:
            raise Failure(f"{method} {url.split('/api/v1')[-1]} answered {response.status}: {body[:200]!r}")
        return response.status, (json.loads(body) if body else None)


async def settle(http, method, url, expect, **kwargs):
    """``call`` for setting up: a stack just started may answer 503 or 504 at first."""
    for attempt in range(10):
        try:
            # A retried creation may find its first attempt done after all (409).
            return await call(http, method, url, expect + ((409,) if attempt else ()), **kwargs)
        except Failure as exc:
            if attempt == 9 or " answered 50" not in str(exc):
                raise
            await asyncio.sleep(1)


# ---- the load generator ------------------------------------------------------------


async def closed_loop(clients, duration, work):
    """``clients`` loops, each starting the next ``work`` when the last is done."""
    latencies, failures = [], Counter()
    deadline = time.monotonic() + duration

    async def loop(index):
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                await work(index)
                latencies.append(time.monotonic() - started)
            except (Failure, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                failures[failure_kind(exc)] += 1

    started = time.monotonic()
    await asyncio.gather(*(loop(i) for i in range(clients)))
    elapsed = time.monotonic() - started
    return {"completed": len(latencies), "per_second": round(len(latencies) / elapsed, 1), "seconds": round(elapsed, 1),
            "latency_ms": summary_ms(latencies, sum(failures.values())), "failures": dict(failures),
            "latencies": latencies}


async def open_loop(rate, count, work):
    """``count`` works started at ``rate`` a second on a fixed schedule, however
    slowly the earlier ones are answered. ``work`` returns the figures to keep, by name."""
    figures, failures = [], Counter()

    async def one(index):
        try:
            figures.append(await work(index))
        except (Failure, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            failures[failure_kind(exc)] += 1

    start = time.monotonic()
    tasks = []
    for index in range(count):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    failed = sum(failures.values())
    outcome = {"rate": rate, "started": count, "failures": dict(failures)}
    for name in (figures[0] if figures else ()):
        values = [figure[name] for figure in figures]
        outcome[name] = {"latency_ms": summary_ms(values, failed), "latencies": values}
    return outcome


async def wait_until(probe, poll):
    """Call ``probe`` until it returns something; the seconds it took and that. The
    pause grows by half each time (up to a second), so that a slow answer is not
    buried under the polls of everyone waiting for one."""
    started = time.monotonic()
    while True:
        found = await probe()
        if found is not None:
            return time.monotonic() - started, found
        if time.monotonic() - started > OFFER_TIMEOUT:
            raise Failure("waited too long")
        await asyncio.sleep(poll)
        poll = min(1.0, poll * 1.5)


# ---- the two systems under test ----------------------------------------------------


class Baseline:
    name = "baseline"

    def __init__(self, base, poll):
        self.base = base
        self.poll = poll

    async def prepare(self, http, clients, stations):
        pass

    async def write(self, http, key, step):
        _, written = await call(http, "POST", self.base + "/writes", (201,), json={"key": key, "step": step, **NEED_BODY})
        return written

    async def effect_of(self, http, key, step):
        async def probe():
            status, effect = await call(http, "GET", f"{self.base}/effects/{key}/{step}", (200, 404))
            return effect if status == 200 else None

        return await wait_until(probe, self.poll)

    async def submit(self, http, index):
        await self.write(http, uuid.uuid4().hex, 1)

    async def cycle(self, http, index):
        key = uuid.uuid4().hex
        for step in range(1, 7):
            await self.write(http, key, step)
            if step in (2, 4, 5):
                await self.effect_of(http, key, step)

    async def presubmit(self, http, count):
        return [uuid.uuid4().hex for _ in range(count)]

    async def approve_to_offer(self, http, key, index):
        written = await self.write(http, key, 1)
        seen, effect = await self.effect_of(http, key, 1)
        made = (parse_time(effect["created_at"]) - parse_time(written["created_at"])).total_seconds()
        return {"made": made, "seen": seen}


class Lastmile:
    name = "lastmile"

    def __init__(self, base, poll):
        self.api = base + "/api/v1"
        self.poll = poll

    def auth(self, token):
        return {"Authorization": f"Bearer {token}"}

    async def login(self, http, phone):
        password = ADMIN_PASSWORD if phone == ADMIN_PHONE else PASSWORD
        _, body = await settle(http, "POST", self.api + "/auth/token", (200,), json={"phone": phone, "password": password})
        return body["access_token"]

    async def prepare(self, http, clients, stations):
        """A district with one institute and ``stations`` stations, each with one
        volunteer of its own; staff of the district; a resident per client."""
        admin = self.auth(await self.login(http, ADMIN_PHONE))
        await settle(http, "POST", self.api + "/sites", (201,), headers=admin,
                   json={"id": DISTRICT, "name": "压测区", "lat": LAT, "lon": LON})
        await settle(http, "POST", self.api + "/sites", (201,), headers=admin,
                   json={"id": INSTITUTE, "name": "压测镇", "lat": LAT, "lon": LON})
        self.stations = [f"{INSTITUTE}.s{i:03d}" for i in range(stations)]
        for station in self.stations:
            await settle(http, "POST", self.api + "/sites", (201,), headers=admin,
                       json={"id": station, "name": station, "lat": LAT, "lon": LON})
        await settle(http, "POST", self.api + "/accounts", (201,), headers=admin,
                   json={"phone": "13810000000", "password": PASSWORD, "name": "压测区中心", "role": "staff",
                         "site_id": DISTRICT})
        self.staff = self.auth(await self.login(http, "13810000000"))

        async def account(phone, role):
            await settle(http, "POST", self.api + "/auth/register", (201,),
                       json={"phone": phone, "password": PASSWORD, "name": role, "role": role})
            return self.auth(await self.login(http, phone))

        async def volunteer(index):
            headers = await account(f"1391{index:07d}", "volunteer")
            await settle(http, "POST", self.api + "/volunteers", (201,), headers=headers,
                       json={"name": "志愿者", "skills": ["health"], "site_id": self.stations[index], "lat": LAT,
                             "lon": LON})
            return headers

        # A few at a time: accounts cost an argon2 hash each, and a stack just started is cold.
        semaphore = asyncio.Semaphore(2)

        async def gently(make):
            async with semaphore:
                return await make

        self.residents = await asyncio.gather(*(gently(account(f"1371{i:07d}", "resident")) for i in range(clients)))
        self.volunteers = await asyncio.gather(*(gently(volunteer(i)) for i in range(stations)))
        # Dispatch learns of volunteers from events: one need per station, through
        # to its offer, shows every one of them is a candidate (and warms up).
        needs = await self.presubmit(http, stations)
        await asyncio.gather(*(self.approve_to_offer(http, need, i) for i, need in enumerate(needs)),
                             return_exceptions=True)

    async def submit_need(self, http, index, station, send=call):
        _, need = await send(http, "POST", self.api + "/needs", (201,), headers=self.residents[index % len(self.residents)],
                             json={**NEED_BODY, "site_id": station})
        return need["id"]

    async def submit(self, http, index):
        await self.submit_need(http, index, self.stations[index % len(self.stations)])

    async def offer_for(self, http, need_id, volunteer):
        async def probe():
            _, page = await call(http, "GET", self.api + "/offers?status=pending", (200,), headers=volunteer)
            return next((offer for offer in page["items"] if offer["need_id"] == need_id), None)

        return await wait_until(probe, self.poll)

    async def until_accepted(self, http, method, url, headers, body, expect):
        """A step that another service must first hear of by event: retried until taken."""
        async def probe():
            status, _ = await call(http, method, url, expect + (404, 409), headers=headers, json=body)
            return True if status in expect else None

        return await wait_until(probe, self.poll)

    async def cycle(self, http, index):
        station, volunteer = self.stations[index % len(self.stations)], self.volunteers[index % len(self.volunteers)]
        resident = self.residents[index % len(self.residents)]
        need_id = await self.submit_need(http, index, station)
        await call(http, "POST", f"{self.api}/needs/{need_id}/approve", (200,), headers=self.staff)
        _, offer = await self.offer_for(http, need_id, volunteer)
        await call(http, "POST", f"{self.api}/offers/{offer['id']}/accept", (200,), headers=volunteer)
        await self.until_accepted(http, "POST", f"{self.api}/needs/{need_id}/check-in", volunteer,
                                  {"lat": LAT, "lon": LON}, (200, 201))
        await call(http, "POST", f"{self.api}/needs/{need_id}/check-out", (200, 201), headers=volunteer,
                   json={"summary": "量了血压", "beneficiaries_served": 1, "lat": LAT, "lon": LON})
        await self.until_accepted(http, "POST", f"{self.api}/needs/{need_id}/rating", resident,
                                  {"stars": 5}, (201,))

    async def presubmit(self, http, count):
        """Needs waiting for approval, the i-th at station i (mod stations)."""
        semaphore = asyncio.Semaphore(10)

        async def one(i):
            async with semaphore:
                return await self.submit_need(http, i, self.stations[i % len(self.stations)], send=settle)

        return await asyncio.gather(*(one(i) for i in range(count)))

    async def approve_to_offer(self, http, need_id, index):
        _, need = await call(http, "POST", f"{self.api}/needs/{need_id}/approve", (200,), headers=self.staff)
        approved_at = next(h["at"] for h in reversed(need["history"]) if h["status"] == "dispatching")
        seen, offer = await self.offer_for(http, need_id, self.volunteers[index % len(self.volunteers)])
        made = (parse_time(offer["created_at"]) - parse_time(approved_at)).total_seconds()
        return {"made": made, "seen": seen}


# ---- processes ------------------------------------------------------------------------


def rabbitmqctl(*args):
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)


def cpu_seconds(pid):
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid):
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def label_of(pid):
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return argv[-2].decode() if len(argv) >= 2 else None  # the service's name ends the command line


class Environment:
    """A virtual host, a database prefix and a data folder of this run's own."""

    def __init__(self):
        self.run_id = uuid.uuid4().hex[:8]
        self.database = os.environ.get("LASTMILE_BENCH_DATABASE_URL") or os.environ.get("LASTMILE_DATABASE_URL") \
            or "postgresql://postgres@127.0.0.1:5432/"
        self.amqp_root = (os.environ.get("LASTMILE_BENCH_AMQP_URI") or "amqp://guest:guest@127.0.0.1:5672/").rstrip("/")
        self.prefix = f"lmbench_{self.run_id}"
        self.data_dir = RESULTS / f"load-{self.run_id}"
        self.vhosts = []
        self.processes = []

    def vhost(self, name):
        vhost = f"lmbench-{self.run_id}-{name}"
        if rabbitmqctl("add_vhost", vhost).returncode != 0:
            raise SystemExit(f"rabbitmqctl could not add the virtual host {vhost}")
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        self.vhosts.append(vhost)
        return f"{self.amqp_root}/{vhost}"

    def wait_for_quiet(self, timeout=60):
        """Wait until the broker holds no message for either system (what a phase left
        behind would otherwise weigh on the next); parked dead letters do not count."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = 0
            for vhost in self.vhosts:
                listed = rabbitmqctl("list_queues", "-p", vhost, "--quiet", "--no-table-headers", "name", "messages")
                for line in listed.stdout.splitlines():
                    name, _, count = line.rpartition("\t")
                    if count.strip().isdigit() and not name.startswith("lastmile.dead."):
                        waiting += int(count)
            if waiting == 0 or time.monotonic() > deadline:
                return waiting
            time.sleep(1)

    def admin_engine(self):
        return sa.create_engine(sa.engine.make_url(self.database).set(drivername="postgresql+psycopg2",
                                                                          database="postgres"),
                                isolation_level="AUTOCOMMIT")

    def start(self, argv, env, log_name):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / log_name, "ab") as log:
            process = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env={**os.environ, **env},
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def cleanup(self, keep_logs):
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        engine = self.admin_engine()
        try:
            with engine.connect() as conn:
                names = conn.execute(sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                     {"p": self.prefix + "\\_%"}).scalars().all()
                for name in names:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            engine.dispose()
        for vhost in self.vhosts:
            rabbitmqctl("delete_vhost", vhost)
        if not keep_logs:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_lastmile(environment):
    port = free_port()
    env = {
        "LASTMILE_AMQP_URI": environment.vhost("lastmile"),
        "LASTMILE_DATABASE_URL": environment.database,
        "LASTMILE_DATABASE_PREFIX": environment.prefix,
        "LASTMILE_DATA_DIR": str(environment.data_dir / "lastmile"),
        "LASTMILE_PORT": str(port),
        "LASTMILE_ADMIN_PHONE": ADMIN_PHONE,
        "LASTMILE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # One load generator speaks for many people from one address.
        "LASTMILE_RATE_LIMIT": "0",
        "LASTMILE_SMS_URL": "",
        "LASTMILE_LOG_LEVEL": "WARNING",
    }
    launcher = environment.start(["-m", "lastmile.stack", "--ready-timeout", "180"], env, "lastmile-stack.log")
    return launcher, env, f"http://127.0.0.1:{port}"


def start_baseline(environment):
    port = free_port()
    database = f"{environment.prefix}_baseline"
    engine = environment.admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    finally:
        engine.dispose()
    env = {
        "BASELINE_AMQP_URI": environment.vhost("baseline"),
        "BASELINE_DATABASE_URL": str(sa.engine.make_url(environment.database).set(database=database)),
        "BASELINE_PORT": str(port),
    }
    processes = {"writer": [environment.start(["-m", "bench.baseline.services", "writer"], env, "baseline-writer-1.log")]}
    time.sleep(2)  # the writer makes the tables
    for name in ("effects", "http"):
        processes[name] = [environment.start(["-m", "bench.baseline.services", name], env, f"baseline-{name}-1.log")]
    return processes, env, f"http://127.0.0.1:{port}"


def wait_http(url, ok, timeout, processes):
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise SystemExit(f"a process exited while starting (logs: {process.args})")
        try:
            if requests.get(url, timeout=3).status_code in ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer in {timeout}s")


def rpc_consumers(amqp_uri, queue):
    from kombu import Connection

    with Connection(amqp_uri) as conn:
        return conn.channel().queue_declare(queue, passive=True)[2]


def wait_consumers(amqp_uri, queue, count, timeout=90):
    deadline = time.monotonic() + timeout
    while rpc_consumers(amqp_uri, queue) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{queue} never reached {count} consumers")
        time.sleep(0.5)


# ---- the run ----------------------------------------------------------------------------


def figure_row(name, unit, lastmile, baseline, higher_is_better):
    ratio = round(lastmile / baseline, 2) if lastmile is not None and baseline else None
    return {"figure": name, "unit": unit, "lastmile": lastmile, "baseline": baseline, "ratio": ratio,
            "higher_is_better": higher_is_better}


async def measure(systems, args, processes, profile_pids, environment):
    results = {system.name: {} for system in systems}
    connector = dict(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)

    async def each(phase, run):
        for system in systems:
            left = await asyncio.to_thread(environment.wait_for_quiet)
            own = {pid: label for pid, label in processes.items() if label.startswith(system.name)}
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(**connector), timeout=timeout) as http:
                print(f"  {phase}: {system.name} …", flush=True)
                before = {pid: cpu_seconds(pid) for pid in own}
                outcome = results[system.name][phase] = await run(system, http)
                # What the phase's requests set going (events still queued) is part of their
                # cost: counted until the broker holds nothing for either system again.
                await asyncio.to_thread(environment.wait_for_quiet)
                outcome["cpu_seconds"] = {label: round(cpu_seconds(pid) - before[pid], 2) for pid, label in own.items()}
                outcome["left_in_queues_before"] = left

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(**connector), timeout=timeout) as http:
        for system in systems:
            await system.prepare(http, args.clients, args.stations)

    await each("submit", lambda s, http: closed_loop(args.clients, args.duration, lambda i: s.submit(http, i)))

    async def cycles(system, http):
        recorders = []
        if args.profile and system.name == "lastmile":
            recorders = start_profiles(profile_pids, args.duration, args.out)
        outcome = await closed_loop(args.clients, args.duration, lambda i: system.cycle(http, i))
        for recorder in recorders:
            recorder.wait()
        return outcome

    await each("cycles", cycles)

    # The needs to approve are submitted first, and what their submission set going has
    # settled (each phase waits for quiet) before the approvals start: the phase measures
    # approvals alone, in time and in CPU.
    count = int(args.rate * args.duration)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(**connector), timeout=timeout) as http:
        waiting = {system.name: await system.presubmit(http, count) for system in systems}

    async def approvals(system, http):
        needs = waiting[system.name]
        return await open_loop(args.rate, count, lambda i: system.approve_to_offer(http, needs[i], i))

    await each("approval_to_offer", approvals)
    return results


async def measure_again(systems, args, environment):
    """The throughput figures once more, after the replicas joined."""
    results = {system.name: {} for system in systems}
    for phase, make in (("submit", lambda s, http: lambda i: s.submit(http, i)),
                        ("cycles", lambda s, http: lambda i: s.cycle(http, i))):
        for system in systems:
            left = await asyncio.to_thread(environment.wait_for_quiet)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                             timeout=aiohttp.ClientTimeout(total=30)) as http:
                print(f"  {phase} with replicas: {system.name} …", flush=True)
                results[system.name][phase] = await closed_loop(args.clients, args.duration, make(system, http))
                results[system.name][phase]["left_in_queues_before"] = left
    return results


def start_profiles(pids, duration, out):
    recorders = []
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    for label, pid in pids.items():
        target = Path(out).with_name(f"{Path(out).stem}-profile-{label}.svg")
        recorders.append(subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--duration", str(int(duration)), "--rate", "200",
             "--nonblocking", "--output", str(target), "--format", "flamegraph"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return recorders


def table(results, replicas):
    """The rows of the printed table, read off the raw results (of one system or both)."""

    def figure(getter, system, source=results):
        try:
            return getter(source[system])
        except (KeyError, TypeError):
            return None

    def row(name, unit, getter, higher_is_better, source=results):
        return figure_row(name, unit, figure(getter, "lastmile", source), figure(getter, "baseline", source),
                          higher_is_better)

    def failed_share(outcome):
        attempts = outcome.get("started") or outcome["completed"] + outcome["latency_ms"]["failed"]
        return round(100 * sum(outcome["failures"].values()) / max(1, attempts), 1)

    def percentiles(name, pick):
        return [row(f"{name} {p}", "ms", lambda r, p=p: pick(r)["latency_ms"][p], False) for p in ("p50", "p95", "p99")]

    def cpu_ms_each(outcome):
        """The system's CPU (its processes', not the broker's or the database's) per
        request or cycle answered (per approval sent: each sets work going, answered
        in time or not), until what they set going was done."""
        done = outcome.get("started") or outcome["completed"]
        return round(1000 * sum(outcome["cpu_seconds"].values()) / done, 1) if done else None

    rows = [row("POST /needs rate", "req/s", lambda r: r["submit"]["per_second"], True)]
    rows += percentiles("POST /needs", lambda r: r["submit"])
    rows.append(row("POST /needs failed", "%", lambda r: failed_share(r["submit"]), False))
    rows.append(row("CPU per POST /needs", "ms", lambda r: cpu_ms_each(r["submit"]), False))
    rows.append(row("cycles/s", "cycles/s", lambda r: r["cycles"]["per_second"], True))
    rows.append(row("cycles failed", "%", lambda r: failed_share(r["cycles"]), False))
    rows.append(row("CPU per cycle", "ms", lambda r: cpu_ms_each(r["cycles"]), False))
    rows += percentiles("approval→offer made", lambda r: r["approval_to_offer"]["made"])
    rows += percentiles("approval→offer seen", lambda r: r["approval_to_offer"]["seen"])
    rows.append(row("approval→offer failed", "%", lambda r: failed_share(r["approval_to_offer"]), False))
    rows.append(row("CPU per approval", "ms", lambda r: cpu_ms_each(r["approval_to_offer"]), False))
    if replicas:
        service = replicas["service"]
        rows.append(row(f"POST /needs rate, 2×{service}", "req/s", lambda r: r["submit"]["per_second"], True,
                        source=replicas))
        rows.append(row(f"cycles/s, 2×{service}", "cycles/s", lambda r: r["cycles"]["per_second"], True,
                        source=replicas))
    return rows


def print_table(rows, settings):
    print(f"\nLastmile beside bare nameko on PostgreSQL: {settings['clients']} clients, {settings['duration']:g} s a "
          f"phase, approvals at {settings['rate']:g}/s, offers polled from {settings['poll_ms']:g} ms on")
    print(f"{'figure':40} {'Lastmile':>10} {'baseline':>10} {'ratio':>7}")
    for row in rows:
        def cell(value):
            return "—" if value is None else f"{value:g}"

        lastmile = "failed" if row["lastmile"] is None and row["unit"] == "ms" else cell(row["lastmile"])
        print(f"{row['figure'] + ' (' + row['unit'] + ')':40} {lastmile:>10} {cell(row['baseline']):>10} "
              f"{cell(row['ratio']):>7}")


def plot(results, rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    throughput = [r for r in rows if r["higher_is_better"]]
    positions = range(len(throughput))
    left.barh([p + 0.2 for p in positions], [r["baseline"] or 0 for r in throughput], 0.4, label="baseline (bare nameko)")
    left.barh([p - 0.2 for p in positions], [r["lastmile"] or 0 for r in throughput], 0.4, label="Lastmile")
    left.set_yticks(list(positions), [f"{r['figure']} ({r['unit']})" for r in throughput], fontsize=8)
    left.set_xlabel("per second (more is better)")
    left.legend(fontsize=8)
    for name, style in (("lastmile", "-"), ("baseline", "--")):
        if name not in results:
            continue
        for outcome, label in ((results[name]["submit"], "POST"),
                               (results[name]["approval_to_offer"]["made"], "approval→offer made"),
                               (results[name]["approval_to_offer"]["seen"], "approval→offer seen")):
            values = sorted(outcome["latencies"])
            if values:
                right.plot([v * 1000 for v in values], [(i + 1) / len(values) for i in range(len(values))], style,
                           label=f"{name}: {label}")
    right.set_xscale("log")
    right.set_xlabel("latency (ms, log)")
    right.set_ylabel("fraction of those answered")
    right.axvline(150, color="grey", linewidth=0.8)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def busiest(cpu):
    """The Lastmile service (not the gateway) that used the most CPU in the cycles."""
    backends = {label.split(":")[1].rsplit("-", 1)[0]: seconds for label, seconds in cpu.items()
                if not label.endswith(":gateway-1")}
    return max(backends, key=backends.get)


def count_rows(database_url, *tables):
    engine = sa.create_engine(sa.engine.make_url(database_url).set(drivername="postgresql+psycopg2"))
    try:
        with engine.connect() as conn:
            return {table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() for table in tables}
    finally:
        engine.dispose()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15, help="seconds of each measured phase")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients of the closed loops")
    parser.add_argument("--rate", type=float, default=50, help="approvals a second")
    parser.add_argument("--stations", type=int, default=40, help="stations, one volunteer each")
    parser.add_argument("--poll-ms", type=float, default=100, help="first pause before looking for an offer again")
    parser.add_argument("--systems", choices=("both", "lastmile", "baseline"), default="both")
    parser.add_argument("--no-replicas", action="store_true", help="skip the second replica")
    parser.add_argument("--profile", action="store_true", help="py-spy flame graphs of gateway, needs and dispatch")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "load.json"))
    args = parser.parse_args(argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    wanted = ("baseline", "lastmile") if args.systems == "both" else (args.systems,)

    # Stopped by a signal, it still stops what it started and removes what it made.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    environment = Environment()
    try:
        print(f"Starting {' and '.join(wanted)} …", flush=True)
        systems, processes, envs = [], {}, {}
        if "baseline" in wanted:
            baseline_processes, envs["baseline"], baseline_base = start_baseline(environment)
            wait_http(baseline_base + "/effects/none/0", (404,), 60, [p for ps in baseline_processes.values() for p in ps])
            wait_consumers(envs["baseline"]["BASELINE_AMQP_URI"], "rpc-baseline_writer", 1)
            processes.update({p.pid: f"baseline:{name}-1" for name, ps in baseline_processes.items() for p in ps})
            systems.append(Baseline(baseline_base, args.poll_ms / 1000))
        if "lastmile" in wanted:
            launcher, envs["lastmile"], lastmile_base = start_lastmile(environment)
            wait_http(lastmile_base + "/readyz", (200,), 180, [launcher])
            processes.update({pid: f"lastmile:{label_of(pid)}-1" for pid in children(launcher.pid)})
            systems.append(Lastmile(lastmile_base, args.poll_ms / 1000))
        profile_pids = {label.split(":")[1]: pid for pid, label in processes.items()
                        if label in ("lastmile:gateway-1", "lastmile:needs-1", "lastmile:dispatch-1")}
        print("Measuring …", flush=True)
        results = asyncio.run(measure(systems, args, processes, profile_pids, environment))

        replicas = None
        if not args.no_replicas:
            service = busiest(results["lastmile"]["cycles"]["cpu_seconds"]) if "lastmile" in wanted else "writer"
            print(f"A second process of the busiest service joins ({service}; the baseline's writer) …", flush=True)
            try:
                if "lastmile" in wanted:
                    environment.start(["-m", "lastmile.runner", service], envs["lastmile"], f"lastmile-{service}-2.log")
                    wait_consumers(envs["lastmile"]["LASTMILE_AMQP_URI"], f"rpc-{service}", 2)
                if "baseline" in wanted:
                    environment.start(["-m", "bench.baseline.services", "writer"], envs["baseline"],
                                      "baseline-writer-2.log")
                    wait_consumers(envs["baseline"]["BASELINE_AMQP_URI"], "rpc-baseline_writer", 2)
                replicas = {"service": service, **asyncio.run(measure_again(systems, args, environment))}
            except SystemExit as exc:
                # The figures measured so far still count; the table says the replicas are missing.
                print(f"No replica figures: {exc}", flush=True)

        # What the systems wrote, so that a figure is never read off requests that did nothing.
        checks = {}
        if "baseline" in wanted:
            checks["baseline"] = count_rows(envs["baseline"]["BASELINE_DATABASE_URL"], "writes", "effects")
        if "lastmile" in wanted:
            server = sa.engine.make_url(environment.database)
            checks["lastmile"] = count_rows(str(server.set(database=f"{environment.prefix}_needs")), "needs") | \
                count_rows(str(server.set(database=f"{environment.prefix}_dispatch")), "offers")
        rows = table(results, replicas)
        settings = {"duration": args.duration, "clients": args.clients, "rate": args.rate, "stations": args.stations,
                    "poll_ms": args.poll_ms, "cores": os.cpu_count(), "load_average": os.getloadavg()}
        print_table(rows, settings)
        report = {"settings": settings, "table": rows, "results": results, "replicas": replicas, "rows": checks}
        Path(args.out).write_text(json.dumps(report, indent=1))
        plot(results, rows, Path(args.out).with_suffix(".png"))
        print(f"\nWrote {args.out} and {Path(args.out).with_suffix('.png')}")
    finally:
        environment.cleanup(args.keep_logs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
