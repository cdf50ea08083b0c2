"""Run the whole Lastmile stack as separate processes: ``python -m lastmile.stack``.

Starts every service and the gateway (``--replicas dispatch=2`` runs more of one),
waits until ``/readyz`` answers 200, loads the demo data with ``--demo``, and
stops them all on Ctrl-C or SIGTERM. A process that dies is started again; one
that keeps dying at start stops the stack with its log's last lines.
"""
import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from lastmile import config

BACKENDS = ("needs", "dispatch", "volunteers", "ratings", "notifications")
STOP_GRACE_SECONDS = 15
CRASH_LOOP = 3  # deaths within a few seconds of starting, in a row


class Process:
    def __init__(self, service, index, log_dir):
        self.service = service
        self.index = index
        self.log_path = log_dir / f"{service}-{index}.log"
        self.popen = None
        self.started_at = 0.0
        self.quick_deaths = 0

    @property
    def label(self):
        return f"{self.service}-{self.index}"

    def start(self):
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "lastmile.runner", self.service],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.started_at = time.monotonic()

    def tail(self, lines=15):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def parse_replicas(values):
    replicas = {name: 1 for name in BACKENDS + ("gateway",)}
    for value in values or ():
        name, _, count = value.partition("=")
        if name not in replicas or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"--replicas takes SERVICE=N with SERVICE one of {', '.join(replicas)}")
        replicas[name] = int(count)
    if replicas["gateway"] != 1:
        raise SystemExit("One gateway binds the port; run more gateways behind a proxy instead")
    return replicas


def wait_ready(base_url, processes, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for process in processes:
            if process.popen.poll() is not None:
                raise SystemExit(f"{process.label} exited while starting:\n{process.tail()}")
        try:
            response = requests.get(base_url + "/readyz", timeout=3)
            if response.status_code == 200:
                return
            last = response.json()
        except requests.RequestException as exc:
            last = str(exc)
        time.sleep(0.5)
    raise SystemExit(f"The stack was not ready after {timeout}s: {last}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="load the Qiongshan demo data once ready")
    parser.add_argument("--replicas", action="append", metavar="SERVICE=N", help="processes of one service")
    parser.add_argument("--ready-timeout", type=float, default=90)
    args = parser.parse_args(argv)
    replicas = parse_replicas(args.replicas)

    log_dir = Path(config.get("LASTMILE_DATA_DIR")) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = [Process(name, i + 1, log_dir) for name in BACKENDS for i in range(replicas[name])]
    processes.append(Process("gateway", 1, log_dir))
    base_url = f"http://127.0.0.1:{config.get('LASTMILE_PORT')}"

    stopping = False

    def request_stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    try:
        for process in processes:
            process.start()
        print(f"Lastmile starting: {', '.join(p.label for p in processes)}; logs in {log_dir}/", flush=True)
        wait_ready(base_url, processes, args.ready_timeout)
        if args.demo:
            from lastmile import demo

            demo.load(base_url + "/api/v1")
        print(f"Lastmile is ready on http://localhost:{config.get('LASTMILE_PORT')} (Ctrl-C stops it)", flush=True)
        while not stopping:
            time.sleep(0.5)
            for process in processes:
                if stopping or process.popen.poll() is None:
                    continue
                quick = time.monotonic() - process.started_at < 10
                process.quick_deaths = process.quick_deaths + 1 if quick else 0
                if process.quick_deaths >= CRASH_LOOP:
                    raise SystemExit(f"{process.label} keeps dying at start:\n{process.tail()}")
                print(f"{process.label} exited with {process.popen.returncode}; starting it again", flush=True)
                process.start()
    finally:
        stop_all(processes)
    return 0


def stop_all(processes):
    running = [p for p in processes if p.popen is not None and p.popen.poll() is None]
    for process in running:
        os.killpg(process.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in running:
        try:
            process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait()
    print("Lastmile stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
