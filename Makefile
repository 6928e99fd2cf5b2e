# gridtwin — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/gridtwin
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15
DEMO_GRID ?= 1-LV-rural1--0-sw

.PHONY: install demo test lint audit browser fuzz bench load chaos serve worker beat clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

## demo: embedded default (SQLite, Celery in process): import a SimBench grid and a CGMES grid, export, show a SHACL rejection
demo: install
	mkdir -p var
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py demo --simbench $(DEMO_GRID)

## test: the whole suite against real PostgreSQL and Redis (lint first; the real-browser tests need `browser`)
test: install lint browser
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) -m pytest -q --durations=20

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	DATABASE_URL=sqlite://:memory: $(PY) manage.py makemigrations --check --dry-run -v0
	DATABASE_URL=sqlite://:memory: $(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null
	$(PY) tests/audit.py deploy bandit

## audit: supply chain and configuration (tests/audit.py): check --deploy with production settings, bandit, and pip-audit over requirements.txt — an unreachable vulnerability database fails the step (NOT checked) unless GRIDTWIN_AUDIT_OFFLINE_OK=1
audit: install
	$(PY) tests/audit.py

## browser: Debian's chromium and chromium-driver for the real-browser tests (tests/browser.py), installed only when missing
BROWSER_PACKAGES := chromium chromium-driver
SUDO = $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "installing $(BROWSER_PACKAGES) (apt-get)"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) \
		|| { $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES); }; \
	fi

## fuzz: schemathesis over the live OpenAPI schema, every operation as its persona, every phase, 1,000 generated examples per operation (tests/test_fuzz_schema.py; `make test` runs it bounded; summary in var/fuzz-report.json)
FUZZ_EXAMPLES ?= 1000
# the personas split over two processes (one database each), so both cores work: the operator owns half the operations
FUZZ_SPLIT ?= provider_operator gateway,provider_steward,consumer,consumer_steward
fuzz: install
	mkdir -p var
	status=0; pids=""; n=0; for personas in $(FUZZ_SPLIT); do n=$$((n + 1)); \
	  DATABASE_URL=$(TEST_DATABASE_URL)_fuzz$$n CELERY_BROKER_URL=$(TEST_BROKER_URL) GRIDTWIN_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	  GRIDTWIN_FUZZ_PERSONAS=$$personas $(PY) -m pytest -q -s -p no:cacheprovider tests/test_fuzz_schema.py > var/fuzz-$$n.log 2>&1 & \
	  pids="$$pids $$!"; done; for pid in $$pids; do wait $$pid || status=1; done; tail -n 3 var/fuzz-*.log; exit $$status

## bench: performance figures with their ratios to the plain approach (see benchmarks/README.md)
bench: install
	mkdir -p var
	$(PY) benchmarks/import_validate.py
	$(PY) benchmarks/cgmes_sv_check.py
	$(PY) benchmarks/simbench_roundtrip.py
	$(PY) benchmarks/pandapower_networks.py
	$(PY) benchmarks/loadflow_timeseries.py
	$(PY) benchmarks/snapshot_scale.py
	$(PY) benchmarks/ingest_throughput.py
	$(PY) benchmarks/sharing_read.py
	$(PY) benchmarks/sharing_catalog.py
	$(PY) benchmarks/sharing_sparql.py
	$(PY) benchmarks/grid_breadth.py

## load: N concurrent API clients against gunicorn and Celery workers started as `serve` and `worker` start them (PostgreSQL, Redis), then the ingest back-pressure at twice the sustainable rate; figures in var/load-report.json (see benchmarks/README.md)
load: install
	mkdir -p var
	$(PY) benchmarks/load_api.py

## chaos: the long chaos run (tests/chaos.py): readings and a load-flow series through private Redis, PostgreSQL, gunicorn and Celery workers while workers are SIGKILLed 200+ times and Redis and PostgreSQL restart; lost, duplicated and changed results counted in var/chaos-report.json
chaos: install
	mkdir -p var
	$(PY) tests/chaos.py --report var/chaos-report.json

## serve: the API under gunicorn (config/gunicorn_conf.py), with the deployment's environment (SECRET_KEY, DATABASE_URL, CELERY_BROKER_URL, ALLOWED_HOSTS)
serve: install
	$(PY) -m gunicorn -c config/gunicorn_conf.py

## worker: a Celery worker with one process per core, production settings unless DJANGO_SETTINGS_MODULE says otherwise (needs SECRET_KEY, DATABASE_URL and CELERY_BROKER_URL); one per machine scales out
worker: install
	DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-config.settings.prod} $(PY) -m celery -A config worker --loglevel=INFO --concurrency=$${WORKER_CONCURRENCY:-$$(nproc)}

## beat: Celery beat (a snapshot load flow of every grid every GRIDTWIN_LOADFLOW_SNAPSHOT_MINUTES, 15 by default; the sweeper of stuck load-flow runs), with the worker's settings and environment
beat: install
	DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-config.settings.prod} $(VENV)/bin/celery -A config beat --loglevel=INFO

clean:
	rm -rf var $(VENV)
