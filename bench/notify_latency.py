"""The time from an offer being made to the volunteer's in-app notification.

    .venv/bin/python -m bench.notify_latency [--offers 200] [--volunteers 20] [--keep-logs]

It starts the real dispatch and notifications services as processes (``python -m
lastmile.runner``, as ``make run`` does) in a RabbitMQ virtual host and PostgreSQL
databases of their own (``LASTMILE_BENCH_DATABASE_URL``, else ``LASTMILE_DATABASE_URL``,
else postgresql://postgres@127.0.0.1:5432/; the broker from ``LASTMILE_BENCH_AMQP_URI``,
else amqp://guest:guest@127.0.0.1:5672/, and ``rabbitmqctl`` to make the virtual host),
registers volunteers with dispatch, tells notifications of each need (need_submitted,
as the needs service would), then approves needs (need_approved): dispatch makes one
offer per need and notifications stores the volunteer's notification.

"Offer made" is the moment dispatch wrote ``offer_made`` (its ``occurred_at``, in the
transaction that made the offer); "notified" is when this process first sees the
notification committed in the notifications database (polled every millisecond), so
the figure covers dispatch's outbox relay, RabbitMQ, the notifications handler and its
commit. Two runs:

- ``sequential``: one approval at a time, each waiting for its notification (no load);
- ``burst``: every approval published at once (all offers in flight together).

The notification's ``created_at`` (taken when its handler began) splits each figure in
two: offer made to handler begun (dispatch's commit, its outbox relay, RabbitMQ), and
the rest (the handler's transaction). Prints p50, p90, p99 and max for each, writes
bench/results/notify_latency.json. The
virtual host and the databases are removed at the end. SMS is off (the SMS channel is
sent by a timer from its own outbox, never in this path).
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
import eventlet  # noqa: E402

eventlet.monkey_patch()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import sqlalchemy as sa  # noqa: E402
from kombu import Connection  # noqa: E402

from bench import percentile  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
STATION = "bench.town.village"
LAT, LON = 20.00, 110.35


def environment(run_id):
    database = os.environ.get("LASTMILE_BENCH_DATABASE_URL") or os.environ.get("LASTMILE_DATABASE_URL") \
        or "postgresql://postgres@127.0.0.1:5432/"
    amqp = (os.environ.get("LASTMILE_BENCH_AMQP_URI") or "amqp://guest:guest@127.0.0.1:5672/").rstrip("/")
    vhost = f"lmbench-{run_id}"
    return vhost, {
        "LASTMILE_AMQP_URI": f"{amqp}/{vhost}",
        "LASTMILE_DATABASE_URL": database,
        "LASTMILE_DATABASE_PREFIX": f"lmbench_{run_id}",
        "LASTMILE_DATA_DIR": str(RESULTS / f"notify-latency-{run_id}"),
        "LASTMILE_SMS_URL": "",
        "LASTMILE_LOG_LEVEL": "WARNING",
    }


def rabbitmqctl(*args):
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)


def summary(latencies):
    ms = [v * 1000 for v in latencies]
    return {"count": len(ms), "p50_ms": round(percentile(ms, 50), 1), "p90_ms": round(percentile(ms, 90), 1),
            "p99_ms": round(percentile(ms, 99), 1), "max_ms": round(max(ms), 1), "min_ms": round(min(ms), 1)}


class Bench:
    def __init__(self, env, volunteers):
        self.env = env
        from lastmile.consumer import event_exchange
        from lastmile.db import database_url

        self.exchange = event_exchange
        self.dispatch_db = sa.create_engine(database_url("dispatch"), pool_size=2)
        self.notifications_db = sa.create_engine(database_url("notifications"), pool_size=2)
        self.connection = Connection(env["LASTMILE_AMQP_URI"])
        self.producer = self.connection.Producer()
        self.volunteers = volunteers

    def publish(self, source, type_, data, need_id=None):
        from lastmile.events import make_event

        event = make_event(source, type_, data, need_id=need_id)
        exchange = self.exchange(source)
        self.producer.publish(event, exchange=exchange, routing_key=type_, serializer="json", declare=[exchange],
                              delivery_mode=2)
        return event

    def register_volunteers(self):
        for i in range(self.volunteers):
            self.publish("volunteers", "volunteer_registered", {
                "volunteer_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "name": f"志愿者{i}",
                "skills": ["health"], "site_id": STATION, "lat": LAT + i * 0.001, "lon": LON, "availability": None,
                "status": "active", "revision": 1})
        self.wait(self.dispatch_db, "SELECT count(*) FROM candidates", self.volunteers, "dispatch's volunteers")

    def needs(self, count):
        """Needs notifications has heard of (need_submitted), not yet approved."""
        made = []
        for i in range(count):
            need_id = str(uuid.uuid4())
            data = {"need_id": need_id, "category": "health", "project_id": None, "title": f"上门量血压{i}",
                    "site_id": STATION, "urgency": "normal", "beneficiary_group": "elderly_alone", "beneficiaries": 1,
                    "window_start": None, "window_end": None, "lat": LAT, "lon": LON, "owner_id": str(uuid.uuid4()),
                    "collector_id": None}
            self.publish("needs", "need_submitted", dict(data, channel="web"), need_id)
            made.append(data)
        ids = [n["need_id"] for n in made]
        self.wait(self.notifications_db, "SELECT count(*) FROM need_facts WHERE need_id IN :ids", len(ids),
                  "notifications to know the needs", ids=ids)
        return made

    def wait(self, engine, sql, count, what, timeout=60, **params):
        stmt = sa.text(sql)
        if "ids" in params:
            stmt = stmt.bindparams(sa.bindparam("ids", expanding=True))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(stmt, params).scalar() >= count:
                    return
            eventlet.sleep(0.05)
        raise SystemExit(f"timed out waiting for {what}")

    def seen(self, need_ids):
        """need_id -> when this process first saw its offer notification committed."""
        stmt = sa.text("SELECT need_id FROM notifications WHERE kind = 'offer_made' AND need_id IN :ids") \
            .bindparams(sa.bindparam("ids", expanding=True))
        waiting, seen = set(need_ids), {}
        deadline = time.monotonic() + 120
        with self.notifications_db.connect() as conn:
            while waiting and time.monotonic() < deadline:
                found = conn.execute(stmt, {"ids": sorted(waiting)}).scalars().all()
                conn.commit()
                at = time.time()
                for need_id in found:
                    seen[need_id] = at
                    waiting.discard(need_id)
                if waiting:
                    eventlet.sleep(0.001)
        if waiting:
            raise SystemExit(f"{len(waiting)} offers never reached the volunteer's notifications")
        return seen

    def made_at(self, need_ids):
        """need_id -> occurred_at of dispatch's first offer_made for it."""
        stmt = sa.text("SELECT need_id, body FROM outbox WHERE type = 'offer_made' AND need_id IN :ids ORDER BY id") \
            .bindparams(sa.bindparam("ids", expanding=True))
        made = {}
        with self.dispatch_db.connect() as conn:
            for need_id, body in conn.execute(stmt, {"ids": list(need_ids)}):
                body = json.loads(body) if isinstance(body, str) else body
                made.setdefault(need_id, datetime.fromisoformat(body["occurred_at"].replace("Z", "+00:00")).timestamp())
        return made

    def began_at(self, need_ids):
        stmt = sa.text("SELECT need_id, created_at FROM notifications WHERE kind = 'offer_made' AND need_id IN :ids") \
            .bindparams(sa.bindparam("ids", expanding=True))
        with self.notifications_db.connect() as conn:
            return {n: c.replace(tzinfo=timezone.utc).timestamp() for n, c in conn.execute(stmt, {"ids": list(need_ids)})}

    def approve(self, need):
        self.publish("needs", "need_approved", need, need["need_id"])

    def run_sequential(self, needs):
        seen = {}
        for need in needs:
            self.approve(need)
            seen.update(self.seen([need["need_id"]]))
        return self.latencies(needs, seen)

    def run_burst(self, needs):
        for need in needs:
            self.approve(need)
        return self.latencies(needs, self.seen([n["need_id"] for n in needs]))

    def latencies(self, needs, seen):
        ids = [n["need_id"] for n in needs]
        made, began = self.made_at(ids), self.began_at(ids)
        return ([seen[i] - made[i] for i in ids], [began[i] - made[i] for i in ids])

    def close(self):
        self.connection.release()
        self.dispatch_db.dispose()
        self.notifications_db.dispose()


def start(service, env, log_dir):
    log = open(log_dir / f"{service}.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "lastmile.runner", service], cwd=ROOT,
                               env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return process


def wait_healthy(services, amqp_uri, processes, timeout=60):
    from nameko.standalone.rpc import ClusterRpcProxy

    deadline = time.monotonic() + timeout
    for service in services:
        while True:
            if any(p.poll() is not None for p in processes):
                raise SystemExit("a service exited while starting; see its log in bench/results/")
            try:
                with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=3) as cluster:
                    getattr(cluster, service).health()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{service} did not start")
                eventlet.sleep(0.5)


def drop_databases(env):
    url = sa.engine.make_url(env["LASTMILE_DATABASE_URL"]).set(drivername="postgresql+psycopg2", database="postgres")
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name in conn.execute(sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                 {"p": env["LASTMILE_DATABASE_PREFIX"] + "\\_%"}).scalars().all():
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def main(argv=None):
    import logging

    logging.getLogger("amqp").setLevel(logging.ERROR)  # "Received method … during closing channel"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offers", type=int, default=200)
    parser.add_argument("--volunteers", type=int, default=20)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)

    run_id = uuid.uuid4().hex[:8]
    vhost, env = environment(run_id)
    created = rabbitmqctl("add_vhost", vhost)
    if created.returncode != 0:
        raise SystemExit(f"could not create the virtual host {vhost}: {created.stderr.strip()}")
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    os.environ.update(env)
    log_dir = Path(env["LASTMILE_DATA_DIR"])
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    try:
        # notifications first: its queues must exist before dispatch publishes (each relay also declares them).
        processes.append(start("notifications", env, log_dir))
        wait_healthy(["notifications"], env["LASTMILE_AMQP_URI"], processes)
        processes.append(start("dispatch", env, log_dir))
        wait_healthy(["dispatch"], env["LASTMILE_AMQP_URI"], processes)
        bench = Bench(env, args.volunteers)
        bench.register_volunteers()
        warm = bench.needs(10)
        bench.run_sequential(warm)  # connections, caches, JIT-less Python warming up
        results = {}
        for mode in ("sequential", "burst"):
            needs = bench.needs(args.offers)
            visible, began = getattr(bench, f"run_{mode}")(needs)
            results[mode] = {"visible": summary(visible), "handler_began": summary(began)}
        bench.close()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        drop_databases(env)
        rabbitmqctl("delete_vhost", vhost)
        if not args.keep_logs:
            for log in log_dir.glob("*.log"):
                log.unlink()
            log_dir.rmdir()

    report = {"offers": args.offers, "volunteers": args.volunteers, "at": datetime.now(timezone.utc).isoformat(),
              "python": sys.version.split()[0], "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "notify_latency.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"offer_made -> volunteer's in-app notification, {args.offers} offers each run (ms)")
    print(f"{'run':<12}{'offer made to':<22}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    for mode, figures in results.items():
        for what, label in (("visible", "notification visible"), ("handler_began", "its handler began")):
            f = figures[what]
            print(f"{mode:<12}{label:<22}{f['p50_ms']:>8}{f['p90_ms']:>8}{f['p99_ms']:>8}{f['max_ms']:>8}")
    print(f"wrote {RESULTS / 'notify_latency.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
