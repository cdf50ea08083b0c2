"""Run one Lastmile service in this process: ``python -m lastmile.runner needs``.

SIGTERM and SIGINT stop it gracefully: entrypoints stop taking work, workers in
flight finish (for up to 20 seconds; then the process is killed), unacked messages
return to their queues for the next replica.
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


# A graceful stop waits this long for work in flight (below the 30 s a container is given).
STOP_SECONDS = 20


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run one Lastmile service")
    parser.add_argument("service", choices=sorted(topology.SERVICES))
    args = parser.parse_args(argv)

    logs.configure(args.service)
    workers = config.get_int("LASTMILE_GATEWAY_WORKERS") if args.service == "gateway" else None
    runner = ServiceRunner(config.nameko_config(max_workers=workers))
    runner.add_service(topology.service_class(args.service))

    def stop_within_deadline():
        try:
            with eventlet.Timeout(STOP_SECONDS):
                runner.stop()
        except eventlet.Timeout:
            # A worker stuck on a connection that died (a broker restart, say) must not keep
            # the process alive: what it had not acked goes back to its queue for another replica.
            logging.getLogger("lastmile.runner").warning(
                "%s did not stop within %ss; killing it, its unfinished messages return to their queues",
                args.service, STOP_SECONDS)
            runner.kill()

    def shutdown(signum, _frame):
        logging.getLogger("lastmile.runner").info("%s stopping on signal %s", args.service, signum)
        # Stop from a greenthread: the signal handler must not block the hub.
        eventlet.spawn_n(stop_within_deadline)

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
