"""Schemathesis over the live OpenAPI schema, as every persona: zero server errors, zero schema-conformance failures.

The app is served by pytest-django's live server (real HTTP, real PostgreSQL, the broker of the suite; no worker drains
it); the schema is fetched from `/api/schema/` like any client would. Each persona of tests/hub.py fuzzes the operations
it is the caller of (PERSONAS) with its own credential, through every phase schemathesis has — examples (where the schema
gives them), coverage, fuzzing, stateful (over the links schemathesis infers: Location headers, ids in responses) — and
every check. Generation is seeded and derandomized, so a failure in CI reproduces locally.

`make test` runs a bounded run: every operation as its caller, every phase — coverage in full (it enumerates each
parameter's and body's edges, ~100 cases an operation, whatever the examples setting), BOUNDED_EXAMPLES generated cases per
operation in the fuzzing and stateful phases. `make fuzz` sets GRIDTWIN_FUZZ_EXAMPLES=1000 for the long run. Both print
per-operation counts and totals and write them, with every failure, to var/fuzz-report.json. GRIDTWIN_FUZZ_ONLY=<path regex>
narrows a run to some operations (to reproduce one failure); GRIDTWIN_FUZZ_PERSONAS=<name,…> to some personas (to split the
long run over processes: `make fuzz FUZZ_PERSONAS=…`, each with its own database).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlencode

import pytest
import schemathesis
from django.conf import settings
from django.db import connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import strategies as st
from schemathesis.engine import Status, events, from_schema

from tests.hub import hub_world_create
from twin.api.serializers import FIRST_YEAR, LAST_YEAR

pytestmark = [pytest.mark.slow]

LONG_EXAMPLES = int(os.environ.get("GRIDTWIN_FUZZ_EXAMPLES", "0"))
BOUNDED_EXAMPLES = 3  # per operation in the fuzzing and stateful phases of `make test`; coverage enumerates its cases regardless
EXAMPLES = LONG_EXAMPLES or BOUNDED_EXAMPLES
ONLY = os.environ.get("GRIDTWIN_FUZZ_ONLY", "")
CHOSEN = [name for name in os.environ.get("GRIDTWIN_FUZZ_PERSONAS", "").split(",") if name]  # to split a long run over processes
PHASES = ("examples", "coverage", "fuzzing", "stateful")  # every phase, in both runs
SEED = 20_261_201
PROGRESS_EVERY_S = float(os.environ.get("GRIDTWIN_FUZZ_PROGRESS_S", "60"))  # how often a run rewrites its report
REPORT = Path(settings.BASE_DIR) / "var" / (f"fuzz-report-{'-'.join(CHOSEN)}.json" if CHOSEN else "fuzz-report.json")

# Persona of tests/hub.py → the operations it is the caller of, as a path regex. Every operation of the schema has exactly one
# caller (test_every_operation_has_one_caller). Who may see whose rows, persona by persona, is tests/test_api_matrix.py.
REVIEW = r"^/api/v1/sharing/requests/\{id\}/(approve|reject|counter)/"
PERSONAS = {
    # a DSO operator's user token: grids, assets, load flows, telemetry reads, its consents to be named owner
    "provider_operator": r"^/api/v1/(?!shared/|sharing/|telemetry/batches)|^/api/v1/sharing/owner-consents/",
    # the provider's gateway key: telemetry ingest and its batches
    "gateway": r"^/api/v1/telemetry/batches/",
    # a steward of the provider: agreements, offers, reviews of requests, the audit, decisions explained
    "provider_steward": rf"^/api/v1/sharing/(agreements|offers|audit|decisions)|{REVIEW}",
    # the consumer's OAuth2 API client (shared:read): the shared views, the catalog and SPARQL
    "consumer": r"^/api/v1/shared/",
    # a steward of the consumer: asks for datasets, answers offers, withdraws
    "consumer_steward": r"^/api/v1/sharing/requests/(?!\{id\}/(approve|reject|counter)/)",
}
# Times the API takes lie in the years FIRST_YEAR to LAST_YEAR, which the schema says with a pattern on the year; generating any
# RFC 3339 time and filtering by that pattern keeps 3 in 100 per parameter (Hypothesis gives up on two of them). Generated times
# lie in those years instead; the coverage phase still sends the pattern's edges and violations.
schemathesis.openapi.format("date-time", st.builds(
    "{}T{:02d}:{:02d}:{:02d}{}".format, st.dates(date(FIRST_YEAR, 1, 1), date(LAST_YEAR, 12, 31)).map(str), st.integers(0, 23),
    st.integers(0, 59), st.integers(0, 59), st.sampled_from(["Z", "+01:00", "-05:30", "+14:00"])))
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
          "response_headers_conformance", "negative_data_rejection", "positive_data_acceptance", "missing_required_header",
          "unsupported_method", "allow_header_conformance", "use_after_free", "ensure_resource_availability", "ignored_auth"]
# Not run: max_response_time (timing is for benchmarks/, not for a suite on a shared machine) and object_level_authorization
# (it needs two identities per operation; who sees whose rows is tests/test_api_matrix.py, asked of every persona).
SCHEMA_CHECKS = {"status_code_conformance", "content_type_conformance", "response_schema_conformance", "response_headers_conformance"}

# positive_data_acceptance says a request the schema allows is answered 2xx (or 401/403/404/409). These operations also refuse
# schema-valid requests with 400/422 for a rule OpenAPI cannot state; each says which. The check still runs on them for every
# other status (a 500 or an undocumented 4xx still fails).
BEYOND_THE_SCHEMA = {
    # bodies the schema can only call bytes or text: only the parser knows valid Turtle, CSV, SenML or SPARQL
    ("POST", r"^/api/v1/models/$"): "an RDF graph of the gridtwin form, judged by the SHACL shapes (422)",
    ("POST", r"^/api/v1/grids/\{id\}/changes/$"): "an RDF graph of the gridtwin form, judged by the SHACL shapes (422)",
    ("POST", r"^/api/v1/telemetry/batches/$"): "a batch in JSON, CSV or SenML (400 unreadable body)",
    ("GET|POST", r"^/api/v1/shared/sparql$"): "a SPARQL query (400 sparql_syntax)",
    ("POST", r"^/api/v1/sharing/agreements/$"): "ODRL JSON-LD / Turtle, or terms the ODRL shapes and the model judge together",
    # rules across parameters or fields, or against stored data
    ("POST", r"^/api/v1/loadflow/runs/$"): "a kind's times (at / start < end), steps within the cap, a scenario naming the grid's "
                                          "assets and a grid the solver can take (422)",
    ("GET", r"^/api/v1/telemetry/readings$"): "point or feeder, not both; end after start; group=all needs an aggregate",
    ("GET", r"^/api/v1/telemetry/latest$"): "feeder or grid, not both",
    ("GET", r"^/api/v1/shared/telemetry$"): "end after start; a resolution no finer than the agreement's",
    ("GET", r"^/api/v1/loadflow/runs/\{id\}/results/$"): "a time series names 1 to 50 assets (iri), a snapshot at most one",
    ("GET", r"^/api/v1/loadflow/runs/\{id\}/plots/"): "the feeder or line drawn is one of the run's grid (400 invalid_picture)",
    ("POST", r"^/api/v1/sharing/decisions$"): "asset_type with the asset resources, and only with them",
    ("POST", r"^/api/v1/sharing/(offers/|offers/\{id\}/)$"): "a grid of your own; the terms the model's rules take together",
    ("PATCH", r"^/api/v1/sharing/offers/\{id\}/$"): "the offer's grid is fixed; the terms the model's rules take together",
    ("POST", r"^/api/v1/sharing/requests/$"): "datasets of your catalog, within the offer's period, purposes and resolution",
    ("POST", r"^/api/v1/sharing/requests/\{id\}/counter/$"): "terms within the offer's",
    ("POST", r"^/api/v1/sharing/agreements/\{id\}/amend/$"): "terms the ODRL shapes and the model judge together (valid_from < "
                                                             "valid_until, a known consumer …)",
}


# A request line longer than the web server's limit never reaches the API (the test server answers its own HTML 414 over
# 65,536 bytes; gunicorn a 400 over 8,190): such cases are not generated. The API's own bound, a 414 in its error shape over
# twin.api.errors.MAX_URI_BYTES, is fuzzed below that and tested in tests/test_contract.py.
WEB_SERVER_MAX_QUERY_BYTES = 60_000


@schemathesis.hook
def filter_query(context, query) -> bool:
    return query is None or len(urlencode(query, doseq=True)) <= WEB_SERVER_MAX_QUERY_BYTES


def authorization(client) -> str:
    """The Authorization header a persona's API client sends."""
    return client._credentials["HTTP_AUTHORIZATION"]


def run_config(header: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "headers": {"Authorization": header},
        # NUL is refused by every text field (PostgreSQL cannot store it), which a schema cannot say short of a pattern on
        # every string: tests/test_request_validation.py and the hostile corpus send it everywhere instead.
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none", "allow-x00": False},
        # a path and query over the API's bound are a 414 whatever the schema allows (twin.api.errors.UriBoundMiddleware)
        "checks": {name: {"enabled": True} for name in CHECKS} | {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "414", "429", "5xx"]},
            "negative_data_rejection": {"expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "414", "415", "422", "428",
                                                              "429", "5xx"]}},
        "phases": {name: {"enabled": True} for name in PHASES},
        "operations": [{"include-method-regex": f"^({method})$", "include-path-regex": path,
                        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409",
                                                                                      "414", "422", "429"]}}}
                       for method, path in BEYOND_THE_SCHEMA],
        "request-timeout": 60,
    })


@dataclass
class OperationTally:
    cases: int = 0
    server_errors: int = 0
    conformance_failures: int = 0
    other_failures: int = 0
    phases: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class Tally:
    """Cases and failures per persona and operation, over every phase."""

    operations: dict[str, OperationTally] = field(default_factory=lambda: defaultdict(OperationTally))
    failures: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stateful_transitions: dict[str, int] = field(default_factory=dict)

    def add(self, persona: str, phase: str, recorder) -> None:
        for case_id, checks in recorder.checks.items():
            node = recorder.cases.get(case_id)
            label = f"{persona} {node.value.operation.label}" if node is not None else f"{persona} {recorder.label}"
            tally = self.operations[label]
            tally.cases += 1
            tally.phases[phase] += 1
            for check in checks:
                if check.status == Status.FAILURE:
                    self.fail(tally, label, phase, check, recorder.find_response(case_id=case_id))

    def fail(self, tally: OperationTally, label: str, phase: str, check, response) -> None:
        if check.name == "not_a_server_error":
            tally.server_errors += 1
        elif check.name in SCHEMA_CHECKS:
            tally.conformance_failures += 1
        else:
            tally.other_failures += 1
        failure = check.failure_info.failure
        self.failures.append({"operation": label, "phase": phase, "check": check.name, "title": failure.title,
                              "status": response.status_code if response is not None else None,
                              "body": response.content[:500].decode("utf-8", "replace") if response is not None else "",
                              "message": failure.message[:1500], "curl": check.failure_info.code_sample[:3000]})


def fuzz(base_url: str, persona: str, operations: str, header: str, tally: Tally, progress) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/api/schema/", config=run_config(header))
    # An exclusion, not `include(path_regex=…)`: the per-operation entries of the config are include filters too, and
    # schemathesis ORs includes together, so an include here would select every operation for every persona.
    wanted, only = re.compile(operations), re.compile(ONLY or ".")
    schema = schema.exclude(func=lambda ctx: not (wanted.search(ctx.operation.path) and only.search(ctx.operation.path)))
    if not any(result.ok() for result in schema.get_all_operations()):
        return
    written = time.monotonic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            tally.add(persona, str(event.phase), event.recorder)
            if time.monotonic() - written > PROGRESS_EVERY_S:
                progress(f"{persona}: {event.phase} {event.recorder.label}")
                written = time.monotonic()
        elif isinstance(event, events.PhaseFinished):
            progress(f"{persona}: {event.phase.name.value} finished")
        elif isinstance(event, events.PhaseStarted) and isinstance(event.payload, events.StatefulPhasePayload):
            tally.stateful_transitions[persona] = tally.stateful_transitions.get(persona, 0) + event.payload.transitions_selected
        elif isinstance(event, events.NonFatalError):
            tally.errors.append(f"{persona}: {event.label}: {event.info.title}: {event.info.message}"[:2000])
        elif isinstance(event, events.FatalError):
            tally.errors.append(f"{persona}: {event.exception!r}"[:2000])


class ServerErrors(logging.Handler):
    """Tracebacks the server logged (django.request), to name the cause of a 5xx in the report."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record):
        self.seen.append(self.format(record)[-3000:])


@pytest.mark.django_db(transaction=True)
def test_the_schema_holds_for_every_persona(live_server, settings, monkeypatch):
    settings.GRIDTWIN_INGEST_MAX_QUEUED_BATCHES = 0  # no worker drains the queue here; shedding has its own tests
    # The live server's request threads keep their database connection for the requests of one keep-alive connection, as
    # DATABASE_CONN_MAX_AGE does in production (each thread closes it when its client goes), instead of one per request.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", None)
    world = hub_world_create()
    tally, started, handler = Tally(), time.monotonic(), ServerErrors()
    logging.getLogger("django.request").addHandler(handler)
    try:
        for persona, operations in PERSONAS.items():
            if CHOSEN and persona not in CHOSEN:
                continue
            fuzz(live_server.url, persona, operations, authorization(world.clients[persona]), tally,
                 progress=lambda what: write_report(tally, started, handler, what))
    finally:
        logging.getLogger("django.request").removeHandler(handler)
        flush_broker()
    report = write_report(tally, started, handler, "complete")
    print_summary(report)
    assert not tally.errors, "\n".join(tally.errors[:10])
    assert report["cases"] > 0
    assert not tally.failures, f"{len(tally.failures)} failures (all in {REPORT}):\n" + "\n".join(
        f"{f['operation']} [{f['check']}] {f['status']} {f['title']}\n    {f['curl'][:300]}" for f in tally.failures[:30])


def write_report(tally: Tally, started: float, handler: ServerErrors, reached: str) -> dict:
    """Write var/fuzz-report.json as it stands (after each phase of each persona, so a long run stopped early keeps its
    figures) and say so on stderr."""
    report = summary(tally, time.monotonic() - started) | {"reached": reached}
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps({**report, "failures": tally.failures, "errors": tally.errors, "server_tracebacks": handler.seen},
                                 indent=1))
    print(f"fuzz: {reached}: {report['cases']} cases, {len(tally.failures)} failures, {report['seconds']:.0f} s", file=sys.stderr)
    return report


def flush_broker() -> None:
    """Drop the load-flow and batch messages the run queued: the test broker holds only test traffic (as tests/test_ingest_worker.py)."""
    if settings.CELERY_BROKER_URL.startswith("redis"):
        import redis

        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


def summary(tally: Tally, elapsed: float) -> dict:
    rows = {label: {**vars(t), "phases": dict(t.phases)} for label, t in sorted(tally.operations.items())}
    return {"mode": "long" if LONG_EXAMPLES else "bounded", "examples_per_operation_and_phase": EXAMPLES, "seed": SEED,
            "seconds": round(elapsed, 1), "operations": len({label.split(" ", 1)[1] for label in rows}), "persona_operations": len(rows),
            "cases": sum(r["cases"] for r in rows.values()), "server_errors": sum(r["server_errors"] for r in rows.values()),
            "conformance_failures": sum(r["conformance_failures"] for r in rows.values()),
            "other_failures": sum(r["other_failures"] for r in rows.values()),
            "cases_per_phase": {phase: sum(r["phases"].get(phase, 0) for r in rows.values())
                                for phase in sorted({p for r in rows.values() for p in r["phases"]})},
            "stateful_transitions": tally.stateful_transitions, "per_operation": rows}


def print_summary(report: dict) -> None:
    for label, row in report["per_operation"].items():
        print(f"{label:96} {row['cases']:6} cases {row['server_errors']:4} 5xx {row['conformance_failures']:4} conformance "
              f"{row['other_failures']:4} other")
    print(f"{report['mode']} run, {report['examples_per_operation_and_phase']} examples per operation and phase: "
          f"{report['operations']} operations ({report['persona_operations']} persona × operation), {report['cases']} cases "
          f"{report['cases_per_phase']} in {report['seconds']} s: {report['server_errors']} server errors, "
          f"{report['conformance_failures']} conformance failures, {report['other_failures']} other failures")


def test_every_operation_has_one_caller():
    """A new endpoint is fuzzed as soon as it exists: it must belong to exactly one persona's operations."""
    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    callers = {path: [p for p, calls in PERSONAS.items() if re.search(calls, path)] for path in paths}
    assert {path: found for path, found in callers.items() if len(found) != 1} == {}
    assert [path for _, path in BEYOND_THE_SCHEMA if not any(re.search(path, p) for p in paths)] == []  # no rule for a gone route
