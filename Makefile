# Lastmile: `make run` starts the whole stack with demo data; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# The demo's first admin; set your own for anything but a demo.
export LASTMILE_ADMIN_PHONE ?= 13800000000
export LASTMILE_ADMIN_PASSWORD ?= lastmile-admin

.PHONY: run test demo bench clean

$(VENV)/.installed: requirements.txt requirements-ci.txt bench/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -r requirements-ci.txt
	$(PY) -m pip install --quiet -r bench/requirements.txt
	touch $@

# The web console's chart library, from the npm registry as its lockfile pins it.
CONSOLE := gateway/console
$(CONSOLE)/node_modules/.package-lock.json: $(CONSOLE)/package.json $(CONSOLE)/package-lock.json
	cd $(CONSOLE) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

INSTALLED := $(VENV)/.installed $(CONSOLE)/node_modules/.package-lock.json

# make run REPLICAS="dispatch=2 needs=2" runs more processes of those services.
REPLICAS ?=

run: $(INSTALLED)
	$(PY) -m lastmile.stack --demo $(foreach r,$(REPLICAS),--replicas $(r))

demo: $(VENV)/.installed
	$(PY) -m lastmile.demo

test: $(INSTALLED)
	$(PY) -m pytest

# make bench: Lastmile beside a bare nameko stack under load, on PostgreSQL (bench/README.md);
# BENCH="--duration 5" passes options on.
BENCH ?=

bench: $(VENV)/.installed
	$(PY) -m bench.load $(BENCH)

clean:
	rm -rf var
