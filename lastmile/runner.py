"""Run one Lastmile service in this process: ``python -m lastmile.runner needs``.

SIGTERM and SIGINT stop it gracefully: entrypoints stop taking work, workers in
flight finish, unacked messages return to their queues for the next replica.
"""
import warnings

warnings.filterwarnings("ignore", message="\s*Eventlet is deprecated")
import eventlet  # noqa: E402

eventlet.monkey_patch()  # noqa: E402  (before anything opens a socket)

import argparse  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from nameko.runners import ServiceRunner  # noqa: E402

from lastmile import config, logs, topology  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run one Lastmile service")
    parser.add_argument("service", choices=sorted(topology.SERVICES))
    args = parser.parse_args(argv)

    logs.configure(args.service)
    workers = config.get_int("LASTMILE_GATEWAY_WORKERS") if args.service == "gateway" else None
    runner = ServiceRunner(config.nameko_config(max_workers=workers))
    runner.add_service(topology.service_class(args.service))

    def shutdown(signum, _frame):
        logging.getLogger("lastmile.runner").info("%s stopping on signal %s", args.service, signum)
        # Stop from a greenthread: the signal handler must not block the hub.
        eventlet.spawn_n(runner.stop)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    runner.start()
    logging.getLogger("lastmile.runner").info("%s started", args.service)
    try:
        runner.wait()
    except Exception:
        logging.getLogger("lastmile.runner").exception("%s crashed", args.service)
        runner.kill()
        sys.exit(1)


if __name__ == "__main__":
    main()
