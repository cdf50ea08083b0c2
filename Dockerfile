# One image for every Lastmile process; the command names the service:
#   docker build -t lastmile .
#   docker run --rm -e LASTMILE_AMQP_URI=... lastmile needs
# (names: needs, dispatch, volunteers, ratings, gateway; see lastmile/topology.py)

# ---- builder: the virtualenv, from the pinned requirements -------------------------
FROM python:3.11.7-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Every pin in requirements.txt has a manylinux wheel for CPython 3.11, so no compiler.
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

# ---- console: the web console's chart library, from the npm registry as its lockfile pins it
FROM node:20.20.2-bookworm-slim AS console
WORKDIR /console
COPY gateway/console/package.json gateway/console/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

# ---- final: the venv and the code, run as a non-root user --------------------------
FROM python:3.11.7-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    LASTMILE_DATA_DIR=/app/var

RUN groupadd --system --gid 10001 lastmile \
 && useradd --system --uid 10001 --gid lastmile --home-dir /app --no-create-home \
            --shell /usr/sbin/nologin lastmile

# Same path as in the builder: the venv's scripts name /opt/venv/bin/python.
COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Code stays owned by root (read-only to the service); only var/ is writable.
COPY lastmile/ lastmile/
COPY services/ services/
COPY gateway/ gateway/
COPY --from=console /console/node_modules/chart.js/dist/chart.umd.js gateway/console/node_modules/chart.js/dist/
RUN python -m compileall -q lastmile services gateway \
 && mkdir -p /app/var \
 && chown lastmile:lastmile /app/var

# The lastmile user above, by number: the host (and Kubernetes' runAsNonRoot) can tell it
# is not root without reading the image's /etc/passwd (hadolint DL3066).
USER 10001:10001
EXPOSE 8000

# The runner handles SIGTERM itself (graceful stop), so python runs as PID 1 directly.
ENTRYPOINT ["python", "-m", "lastmile.runner"]
