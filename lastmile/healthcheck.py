"""Container health check: ``python -m lastmile.healthcheck needs``.

Exits 0 when the service answers within a few seconds, 1 otherwise, and prints
one JSON line either way. A backend service is asked its ``health`` RPC (which
touches its database); the gateway is asked ``GET /healthz`` on its own port.
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")  # keep the output one line

import eventlet  # noqa: E402

eventlet.monkey_patch()  # noqa: E402  (before anything opens a socket)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import urllib.request  # noqa: E402

from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

from lastmile import config, topology  # noqa: E402

TIMEOUT = 5  # seconds; the compose healthcheck allows more than this


def ask_service(name):
    # config.get: LASTMILE_AMQP_URI from the environment, else the default in VARIABLES.
    with ClusterRpcProxy({"AMQP_URI": config.get("LASTMILE_AMQP_URI")}, timeout=TIMEOUT) as cluster:
        return getattr(cluster, name).health()


def ask_gateway():
    url = f"http://127.0.0.1:{config.get('LASTMILE_PORT')}/healthz"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return json.loads(response.read() or b"null")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Exit 0 when a Lastmile service answers")
    parser.add_argument("service", choices=sorted(topology.SERVICES))
    name = parser.parse_args(argv).service
    try:
        # The timeout also bounds connecting to (and leaving) an unreachable broker.
        with eventlet.Timeout(TIMEOUT + 1):
            answer = ask_gateway() if name == "gateway" else ask_service(name)
    except (Exception, eventlet.Timeout) as exc:
        print(json.dumps({"service": name, "ok": False, "error": f"{exc.__class__.__name__}: {exc}"}))
        return 1
    print(json.dumps({"service": name, "ok": True, "answer": answer}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
