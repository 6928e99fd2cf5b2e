"""The hostile-input corpus (tests/hostile/MANIFEST.toml) against every entry point that takes input (issue 10, build 2).

Each case goes to every entry point that takes its format, as that entry point's real caller would send it: the HTTP
API through Django's test client with each persona's credentials, `manage.py import_grid` (plain and `--cgmes`) through
`call_command`, the MQTT bridge through its message handler, and every accepted telemetry batch through the worker's
processing service. For each (case, entry point) it asserts the manifest's answer — a 4xx with the machine-readable
reason (and the node, where named), a non-zero command exit whose message starts with it, or for telemetry a 202 whose
hostile reading is rejected with its reason while the valid one beside it is stored — within the manifest's time and
memory bounds, with nothing else written to the database (every table of the twin and the hub is counted before and
after; the audit trail is the one table a refusal writes to), and with no outbound connection: every SSRF URL of the
corpus points at a local canary listener, and `socket` is guarded so that any other connection attempt or DNS lookup is
recorded and refused. The figures go to `var/hostile-corpus-report.json` for the scorecard.

Rerun: `DATABASE_URL=… CELERY_BROKER_URL=… .venv/bin/python -m pytest -q tests/test_hostile_corpus.py`
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import ipaddress
import json
import re
import socket
import threading
import time
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone

from ingest import services as ingest
from ingest.mqtt import mqtt_message_ingest
from sharing import access_requests, services
from sharing.datasets import offer_datasets
from sharing.models import AuditEntry
from tests.hub import PURPOSE, agreement_terms, hub_world_create, offer_create
from twin import models as twin

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "hostile"
MANIFEST = tomllib.loads((CORPUS / "MANIFEST.toml").read_text())
REPORT = ROOT / "var" / "hostile-corpus-report.json"
generators = importlib.import_module("tests.hostile.generators")

RDF_MEDIA_TYPES = {"turtle": "text/turtle", "json-ld": "application/ld+json", "rdf-xml": "application/rdf+xml",
                   "n-triples": "application/n-triples", "cgmes": "application/rdf+xml", "odrl-turtle": "text/turtle",
                   "odrl-json-ld": "application/ld+json"}
RDF_EXTENSIONS = {"turtle": ".ttl", "json-ld": ".jsonld", "rdf-xml": ".rdf", "n-triples": ".nt", "cgmes": ".xml"}
TELEMETRY_MEDIA_TYPES = {"telemetry-json": "application/json", "telemetry-csv": "text/csv", "senml": "application/senml+json"}
TELEMETRY_TOPICS = {"telemetry-json": "json", "telemetry-csv": "csv", "senml": "senml"}
# The valid reading at position 0 of every telemetry case (`@P0@` at this time).
VALID_TS = "2024-05-01T12:00:00+00:00"
# Tables a refusal may write to: the audit trail records every request, refused ones too.
AUDIT_TABLES = {AuditEntry._meta.label}
TELEMETRY_TABLES = {m._meta.label for m in (twin.TelemetryBatch, twin.RejectedReading)}
CATALOG_PARAMETERS = ("q", "provider", "grid", "feeder")
FILTERS = [("provider_operator", "/api/v1/grids/", "iri"), ("provider_operator", "/api/v1/meters/", "name"),
           ("provider_operator", "/api/v1/lines/", "iri"), ("provider_steward", "/api/v1/sharing/audit", "participant_iri")]
LOOPBACK = ("127.0.0.1", "::1", "localhost")


# --- the canary and the socket guard --------------------------------------------------------------------------------


class Canary:
    """Local TCP listeners (IPv4, and IPv6 where the machine has it) that every SSRF URL of the corpus points at; each
    accepted connection is counted and closed at once."""

    def __init__(self):
        self.connections: list[tuple] = []
        self.sockets = [self._listen(socket.AF_INET, "127.0.0.1")]
        with contextlib.suppress(OSError):  # no IPv6 loopback here: the IPv6 URLs point at the IPv4 canary
            self.sockets.append(self._listen(socket.AF_INET6, "::1"))
        self.port = self.sockets[0].getsockname()[1]
        self.port6 = self.sockets[-1].getsockname()[1]
        self.host6 = f"[::1]:{self.port6}" if len(self.sockets) > 1 else f"127.0.0.1:{self.port}"
        self.running = True
        self.threads = [threading.Thread(target=self._accept, args=(s,), daemon=True) for s in self.sockets]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _listen(family, host):
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((host, 0))
        listener.listen(16)
        listener.settimeout(0.2)
        return listener

    def _accept(self, listener):
        while self.running:
            try:
                connection, address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(address)
            connection.close()

    def close(self):
        self.running = False
        for thread in self.threads:
            thread.join(timeout=1)
        for listener in self.sockets:
            listener.close()


@dataclass
class SocketGuard:
    """Records every outbound connection attempt and DNS lookup of the process: loopback connections go through (the
    test's own broker, the canary); any other address, and any lookup of a name that is not loopback, is refused."""

    attempts: list[str] = field(default_factory=list)

    def install(self, monkeypatch):
        connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
        guard = self

        def allowed(address) -> bool:
            if not isinstance(address, tuple):  # AF_UNIX
                return True
            host = str(address[0]).strip("[]")
            try:
                return ipaddress.ip_address(host.split("%")[0]).is_loopback
            except ValueError:
                return host in LOOPBACK

        def guarded_connect(sock, address):
            if not allowed(address):
                guard.attempts.append(f"connect {address!r}")
                raise ConnectionRefusedError(f"outbound connection to {address!r} refused by the hostile-corpus guard")
            return connect(sock, address)

        def guarded_connect_ex(sock, address):
            if not allowed(address):
                guard.attempts.append(f"connect_ex {address!r}")
                return 111
            return connect_ex(sock, address)

        def guarded_getaddrinfo(host, *args, **kwargs):
            if host is not None and not allowed((host if isinstance(host, str) else host.decode(), 0)):
                guard.attempts.append(f"getaddrinfo {host!r}")
                raise socket.gaierror(socket.EAI_NONAME, "lookup refused by the hostile-corpus guard")
            return getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", guarded_connect)
        monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
        monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)


# --- memory and time ------------------------------------------------------------------------------------------------


def _status_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def measured(call):
    """(result, seconds, MB of resident memory the call added at its peak): the kernel's high-water mark is reset to the
    current resident size first (/proc/self/clear_refs), so native allocations (pyoxigraph, expat) count too. Where the
    kernel cannot reset it, the memory is not measured (None) rather than guessed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        resettable = False
    else:
        resettable = True
    before = _status_kb("VmRSS")
    started = time.monotonic()
    result = call()
    seconds = time.monotonic() - started
    return result, seconds, max(_status_kb("VmHWM") - before, 0) / 1024 if resettable else None


# --- the corpus -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    attacks: str
    format: str
    spec: dict

    def expect(self, entry_point: str) -> dict:
        return self.spec.get("at", {}).get(entry_point, self.spec["expect"])

    def raw(self) -> bytes:
        """The case's bytes as versioned (placeholders not yet filled)."""
        if "file" in self.spec:
            return (CORPUS / self.spec["file"]).read_bytes()
        if "generate" in self.spec:
            arguments = dict(self.spec["generate"])
            return getattr(generators, arguments.pop("name"))(**arguments)
        return (self.spec.get("raw") or quote(self.spec["value"], safe="@")).encode()


def corpus_cases() -> list[Case]:
    return [Case(spec["id"], spec["attacks"], spec["format"], spec) for spec in MANIFEST["case"]]


def pairs() -> list[tuple[Case, str]]:
    """Every (case, entry point) the manifest asks for: each case at every entry point that takes its format."""
    return [(case, name) for case in corpus_cases() for name, entry in MANIFEST["entry_points"].items() if case.format in entry["takes"]]


def fill(body: bytes, values: dict[str, str]) -> bytes:
    """The case's placeholders filled in (the query value placeholder `@REPEAT600@` is 600 IRI characters)."""
    values = {"@REPEAT600@": quote("urn:x:" + "i" * 594, safe=""), **values}
    pattern = re.compile("|".join(re.escape(key) for key in values).encode())
    return pattern.sub(lambda match: values[match.group(0).decode()].encode(), body)


# --- the world the corpus is sent into --------------------------------------------------------------------------------


@dataclass
class World:
    """The hub the corpus meets: every persona (tests.hub), a published offer, a pending request, a draft agreement, the
    CGMES sample's profiles, and the placeholder values of the manifest."""

    hub: object
    source: twin.TelemetrySource
    offer: object
    pending_request: object
    draft: object
    cgmes_dir: Path
    values: dict[str, str]


def world_create(tmp_path: Path, canary: Canary) -> World:
    hub = hub_world_create(feeders=2, meters_per_feeder=3, steps=2)
    offer = offer_create(hub.provider, hub.grid, purposes=[PURPOSE, "research", "network_planning"], audience=[])
    dataset = offer_datasets(offer)[0].id
    now = timezone.now()
    pending = access_requests.request_create(consumer=hub.consumer, datasets=[dataset], purpose=PURPOSE, valid_from=now,
                                             valid_until=now + timedelta(days=30))
    draft = services.agreement_create(provider=hub.provider, **agreement_terms(hub.provider, hub.consumer, uid="urn:uuid:corpus-draft"))
    cgmes_dir = tmp_path / "cgmes-sample"
    cgmes_dir.mkdir()
    for profile in ("EQ", "TP", "SV", "DI"):
        (cgmes_dir / f"sample_{profile}.xml").write_bytes(generators.cgmes_sample_profile(profile))
    values = {"@CANARY@": f"127.0.0.1:{canary.port}", "@CANARY6@": canary.host6, "@PORT@": str(canary.port),
              "@P0@": str(hub.meters[0].pk), "@P1@": str(hub.meters[1].pk), "@GRID_ID@": str(hub.grid.pk), "@GRID_IRI@": hub.grid.iri,
              "@FEEDER_IRI@": hub.feeders[0].iri, "@PROVIDER_IRI@": hub.provider.iri, "@CONSUMER_IRI@": hub.consumer.iri,
              "@OFFER_UID@": offer.uid, "@DATASET@": dataset,
              "@UNTIL@": (now + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return World(hub, twin.TelemetrySource.objects.get(name="gw-nord"), offer, pending, draft, cgmes_dir, values)


# --- sending a case to an entry point ---------------------------------------------------------------------------------


@dataclass
class Answer:
    """What an entry point did with a case: an HTTP status and JSON body, or a command's exit; a telemetry batch."""

    status: int
    body: dict = field(default_factory=dict)
    text: str = ""
    batch: twin.TelemetryBatch | None = None


def _http(response) -> Answer:
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = {}
    return Answer(response.status_code, body if isinstance(body, dict) else {"list": body}, response.content[:300].decode(errors="replace"))


def _processed(answer: Answer) -> Answer:
    if answer.status == 202:
        batch = ingest.telemetry_batch_process(batch_id=answer.body["id"]) or twin.TelemetryBatch.objects.get(pk=answer.body["id"])
        answer.batch = twin.TelemetryBatch.objects.get(pk=batch.pk)
    return answer


def _command(*args) -> Answer:
    try:
        call_command("import_grid", *args, stdout=io.StringIO(), stderr=io.StringIO())
    except CommandError as exc:
        return Answer(1, text=str(exc))
    return Answer(0)


# JSON bodies: (persona, path) of each entry point, the path filled in from the world
JSON_POSTS = {"http.agreements": ("provider_steward", "/api/v1/sharing/agreements"),
              "http.agreement_amend": ("provider_steward", "/api/v1/sharing/agreements/{w.hub.agreement.pk}/amend"),
              "http.agreement_revoke": ("provider_steward", "/api/v1/sharing/agreements/{w.draft.pk}/revoke"),
              "http.offers": ("provider_steward", "/api/v1/sharing/offers"),
              "http.requests": ("consumer", "/api/v1/sharing/requests"),
              "http.request_counter": ("provider_steward", "/api/v1/sharing/requests/{w.pending_request.pk}/counter"),
              "http.owner_consents": ("provider_operator", "/api/v1/sharing/owner-consents"),
              "http.decisions": ("consumer", "/api/v1/sharing/decisions"),
              "http.loadflow_runs": ("provider_operator", "/api/v1/loadflow/runs")}
RDF_POSTS = {"http.models": ("provider_operator", "/api/v1/models/"),
             "http.changes": ("provider_operator", "/api/v1/grids/{w.hub.grid.pk}/changes"),
             "http.agreements_odrl": ("provider_steward", "/api/v1/sharing/agreements")}


def _post(w: World, persona_and_path: tuple[str, str], body: bytes, content_type: str) -> Answer:
    persona, path = persona_and_path
    return _http(w.hub.clients[persona].post(path.format(w=w), data=body, content_type=content_type))


def _import_file(w: World, case: Case, body: bytes, tmp_path: Path) -> Answer:
    path = tmp_path / f"{case.id}{RDF_EXTENSIONS[case.format]}"
    path.write_bytes(body)
    return _command(str(path), "--participant", w.hub.provider.iri)


def _import_cgmes(w: World, case: Case, body: bytes, tmp_path: Path) -> Answer:
    """The case beside the sample's profiles, or in place of the one it `replaces`."""
    replaced = case.spec.get("replaces")
    path = tmp_path / (f"sample_{replaced}.xml" if replaced else "hostile.xml")
    path.write_bytes(body)
    files = [f for f in sorted(w.cgmes_dir.glob("*.xml")) if not replaced or not f.name.endswith(f"_{replaced}.xml")] + [path]
    return _command("--cgmes", *map(str, files), "--participant", w.hub.provider.iri)


def _mqtt(w: World, case: Case, body: bytes) -> Answer:
    done = mqtt_message_ingest(topic=f"gridtwin/telemetry/{w.source.name}/{TELEMETRY_TOPICS[case.format]}", payload=body)
    batch = twin.TelemetryBatch.objects.order_by("-id").first()
    if done.startswith(f"batch {batch.pk} queued"):
        return _processed(Answer(202, {"id": batch.pk}, done))
    return Answer(0, text=done, batch=batch)


def _get_each(w: World, requests: list[tuple[str, str, str]], value: str) -> Answer:
    """GET each (persona, path, parameter) with the value as the parameter: one answer for all of them."""
    return _all_of([w.hub.clients[persona].get(f"{path}?{name}={value}") for persona, path, name in requests])


def _offer_change(w: World, case: Case, body: bytes, _) -> Answer:
    return _http(w.hub.clients["provider_steward"].patch(f"/api/v1/sharing/offers/{w.offer.pk}", data=body,
                                                          content_type="application/json"))


def _telemetry(w: World, case: Case, body: bytes, _) -> Answer:
    return _processed(_post(w, ("gateway", "/api/v1/telemetry/batches"), body, TELEMETRY_MEDIA_TYPES[case.format]))


def _sparql(w: World, case: Case, body: bytes, _) -> Answer:
    path = f"/api/v1/shared/sparql?purpose={PURPOSE}&agreement={w.hub.agreement.pk}"
    return _post(w, ("consumer", path), body, "application/sparql-query")


def _catalog(w: World, case: Case, body: bytes, _) -> Answer:
    return _get_each(w, [("consumer", "/api/v1/shared/catalog", name) for name in CATALOG_PARAMETERS], body.decode())


SENDERS = {
    **{name: functools.partial(lambda w, case, body, _, where: _post(w, where, body, "application/json"), where=where)
       for name, where in JSON_POSTS.items()},
    **{name: functools.partial(lambda w, case, body, _, where: _post(w, where, body, RDF_MEDIA_TYPES[case.format]), where=where)
       for name, where in RDF_POSTS.items()},
    "http.offer_change": _offer_change,
    "cli.import_grid": _import_file,
    "cli.import_grid_cgmes": _import_cgmes,
    "http.telemetry": _telemetry,
    "mqtt.telemetry": lambda w, case, body, _: _mqtt(w, case, body),
    "http.sparql": _sparql,
    "http.catalog": _catalog,
    "http.filters": lambda w, case, body, _: _get_each(w, FILTERS, body.decode()),
}


def send(world: World, case: Case, entry_point: str, body: bytes, tmp_path: Path) -> Answer:
    """Send `body` (the case, filled in) to `entry_point` as its caller would."""
    return SENDERS[entry_point](world, case, body, tmp_path)


def _all_of(responses) -> Answer:
    """One answer for several requests: the first whose status differs from the others', else the first."""
    answers = [_http(r) for r in responses]
    odd = [a for a in answers if a.status != answers[0].status]
    return odd[0] if odd else answers[0]


# --- judging an answer ------------------------------------------------------------------------------------------------


def problems(world: World, case: Case, entry_point: str, answer: Answer) -> list[str]:
    """What is wrong with the answer, given what the manifest expects (empty: as expected)."""
    expect = case.expect(entry_point)
    if entry_point.startswith("cli."):
        return _command_problems(MANIFEST["entry_points"][entry_point], expect, answer)
    if entry_point == "mqtt.telemetry" and expect["status"] != 202:
        error = answer.batch.error if answer.batch is not None else ""
        if answer.batch is None or answer.batch.status != "failed" or not error.startswith(expect.get("reason", "")):
            return [f"expected a failed batch ({expect.get('reason')}), got {answer.text!r} {error!r}"]
        return []
    found = []
    if answer.status != expect["status"]:
        found.append(f"status {answer.status}, expected {expect['status']}: {answer.text}")
    elif answer.status >= 400 and "reason" not in answer.body:
        found.append(f"a {answer.status} without a machine-readable reason: {answer.text}")
    elif "reason" in expect and answer.body.get("reason") != expect["reason"]:
        found.append(f"reason {answer.body.get('reason')!r}, expected {expect['reason']!r}: {answer.text}")
    elif "node" in expect and not _names_node(answer.body, expect["node"]):
        found.append(f"the answer does not name the node {expect['node']}: {answer.text}")
    if not found and answer.status == 202 and ("rejected" in expect or "rejected_all" in expect):
        found += _telemetry_problems(world, expect, answer.batch)
    return found


def _names_node(body: dict, node: str) -> bool:
    return body.get("node") == node or any(v.get("focus_node") == node for v in body.get("violations", []))


def _command_problems(entry: dict, expect: dict, answer: Answer) -> list[str]:
    if expect["status"] == 0:  # the command is expected to succeed (what it ignores is said in the manifest)
        return [] if answer.status == 0 else [f"the command failed: {answer.text[:300]!r}"]
    if answer.status == 0:
        return [f"the command succeeded; expected a refusal ({expect.get('reason')})"]
    reason = expect.get("reason", "")
    if reason == "shacl_violation":
        wanted = ["does not conform", expect.get("node", "")]
    else:
        wanted = [entry.get("parse_errors_as", reason)]
        wanted += [expect["node"]] if "node" in expect and "parse_errors_as" not in entry else []
    missing = [w for w in wanted if w not in answer.text]
    return [f"the command's message lacks {missing}: {answer.text[:300]!r}"] if missing else []


def _telemetry_problems(world: World, expect: dict, batch: twin.TelemetryBatch) -> list[str]:
    rejected = list(twin.RejectedReading.objects.filter(batch=batch).order_by("position").values_list("position", "reason"))
    if "rejected_all" in expect:
        if batch.accepted_count or any(reason != expect["rejected_all"] for _, reason in rejected) or len(rejected) != batch.received_count:
            return [f"expected every reading rejected as {expect['rejected_all']}: {batch.status} {rejected[:3]}"]
        return []
    wanted = [tuple(item) for item in expect["rejected"]]
    found = []
    if batch.status != "succeeded" or rejected != wanted:
        found.append(f"batch {batch.status} ({batch.error!r}), rejected {rejected}, expected {wanted}")
    stored = twin.Reading.objects.filter(point_id=world.hub.meters[0].pk, ts=VALID_TS).count()
    if stored != 1 or batch.accepted_count != batch.received_count - len(wanted):
        found.append(f"the valid reading was not stored beside the rejected one (stored {stored}, accepted {batch.accepted_count})")
    return found


def table_counts() -> dict[str, int]:
    """Rows of every table of the twin and the hub (one query)."""
    tables = {model._meta.label: model._meta.db_table for app in ("twin", "sharing") for model in apps.get_app_config(app).get_models()}
    with connection.cursor() as cursor:
        # table names of our own models, quoted by the backend: nothing of the request is in this text
        cursor.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {connection.ops.quote_name(t)})" for t in tables.values()))  # noqa: S608
        return dict(zip(tables, cursor.fetchone(), strict=True))


def half_written(before: dict, after: dict, case: Case, entry_point: str, answer: Answer) -> list[str]:
    """Tables a refused (case, entry point) changed beyond what a refusal writes (the audit; MQTT: its failed batch)."""
    if case.expect(entry_point)["status"] < 300:
        return []  # accepted on purpose (an identifier, a rejected reading): judged by problems()
    allowed = AUDIT_TABLES | (TELEMETRY_TABLES if entry_point == "mqtt.telemetry" else set())
    changed = sorted(label for label in before if before[label] != after[label] and label not in allowed)
    return [f"refused, yet wrote to {', '.join(changed)}"] if changed else []


# --- the test ---------------------------------------------------------------------------------------------------------


def test_the_manifest_is_complete_and_every_case_reaches_an_entry_point():
    cases = corpus_cases()
    assert len({case.id for case in cases}) == len(cases), "case ids must be unique"
    taken = {fmt for entry in MANIFEST["entry_points"].values() for fmt in entry["takes"]}
    for case in cases:
        assert case.format in taken, case.id
        assert case.attacks and "status" in case.spec["expect"], case.id
        assert set(case.spec.get("at", {})) <= set(MANIFEST["entry_points"]), case.id
        assert ("file" in case.spec) + ("generate" in case.spec) + ("value" in case.spec or "raw" in case.spec) == 1, case.id
        if "file" in case.spec:
            assert (CORPUS / case.spec["file"]).is_file(), case.spec["file"]
    assert set(SENDERS) == set(MANIFEST["entry_points"]), "every entry point of the manifest has its sender here"
    for name, entry in MANIFEST["entry_points"].items():
        assert any(case.format in entry["takes"] for case in cases), f"no case reaches {name}"
    used = {case.spec["file"] for case in cases if "file" in case.spec}
    assert {f"cases/{p.name}" for p in (CORPUS / "cases").iterdir()} == used, "every file of cases/ is a case of the manifest"


def test_the_canary_hears_a_connection_and_the_guard_refuses_every_other(monkeypatch):
    """The no-outbound-connection assertion means something: the canary counts what reaches it, and the guard refuses (and
    records) a connection to any other address and any lookup of a name, before anything leaves the machine."""
    canary, guard = Canary(), SocketGuard()
    guard.install(monkeypatch)
    try:
        socket.create_connection(("127.0.0.1", canary.port), timeout=1).close()
        deadline = time.monotonic() + 2
        while not canary.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(canary.connections) == 1
        with pytest.raises(ConnectionRefusedError), socket.socket() as sock:
            sock.connect(("169.254.169.254", 80))
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo("metadata.google.internal", 80)
        assert guard.attempts == ["connect ('169.254.169.254', 80)", "getaddrinfo 'metadata.google.internal'"]
    finally:
        canary.close()


def test_text_that_fits_is_judged_on_every_class_and_as_pyshacl_judges_it():
    """gts:BoundedTextShape (names ≤ 200, profiles ≤ 100, IRIs ≤ 500) targets every class a shape targets, and pyshacl
    finds what the engine finds (the corpus's uploads only see the engine)."""
    import pyshacl
    from rdflib import Graph
    from rdflib.namespace import SH

    from ontology.validation import SHAPES_PATH, validate_graph

    shapes = Graph().parse(SHAPES_PATH)
    bounded = shapes.namespace_manager.expand_curie("gts:BoundedTextShape")
    assert set(shapes.objects(bounded, SH.targetClass)) == set(shapes.objects(None, SH.targetClass))
    graph = Graph()
    for name in ("turtle-long-name.ttl", "ntriples-long-iri-reference.nt"):
        graph.parse(CORPUS / "cases" / name, format="nt" if name.endswith(".nt") else "turtle")
    _, results, _ = pyshacl.validate(graph, shacl_graph=shapes, inference="none", advanced=True)
    reference = {(str(results.value(r, SH.focusNode)), str(results.value(r, SH.resultPath) or ""))
                 for r in results.subjects(SH.sourceShape, bounded)}
    engine = {(v.focus_node, v.path or "") for v in validate_graph(graph).violations if v.source_shape == str(bounded)}
    assert engine == reference and len(engine) == 3  # the long name, the long IRI, the reference to it


@pytest.mark.parametrize("topic", ["gridtwin/telemetry/gw-nord\x00/json", "gridtwin/telemetry/gw-nord/json\x00", "gridtwin/\x1b[2J/x/json"])
def test_an_mqtt_topic_with_control_characters_is_dropped_not_a_database_error(utility, topic):
    """A NUL in the source or format part reached PostgreSQL (DataError): the message was never acknowledged, so redelivered
    for ever."""
    ingest.telemetry_source_issue(participant=utility, name="gw-nord")
    assert mqtt_message_ingest(topic=topic, payload=b'{"readings": [{"point": 1}]}').startswith("dropped")
    assert not twin.TelemetryBatch.objects.exists()


def test_every_case_at_every_entry_point_is_refused_cleanly(tmp_path, monkeypatch, settings):
    for name, value in MANIFEST["settings"].items():
        setattr(settings, name, value)
    bounds = MANIFEST["bounds"]
    canary = Canary()
    guard = SocketGuard()
    guard.install(monkeypatch)
    started = time.monotonic()
    try:
        world = world_create(tmp_path, canary)
        built = time.monotonic()
        results = [run_one(world, case, entry_point, tmp_path) for case, entry_point in pairs()]
    finally:
        canary.close()
    timing = {"world_s": round(built - started, 1), "corpus_s": round(time.monotonic() - built, 1)}
    failures = [f"{r['case']} @ {r['entry_point']}: {problem}" for r in results for problem in r["problems"]]
    failures += [f"{r['case']} @ {r['entry_point']}: took {r['seconds']:.2f} s" for r in results if r["seconds"] > bounds["max_seconds"]]
    failures += [f"{r['case']} @ {r['entry_point']}: added {r['memory_mb']:.0f} MB" for r in results
                 if r["memory_mb"] is not None and r["memory_mb"] > bounds["max_memory_mb"]]
    report = summary(results, canary, guard) | timing | {"failures": failures}
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "slowest"}, indent=1))
    assert not canary.connections, f"the canary was reached: {canary.connections}"
    assert not guard.attempts, f"outbound connection attempts: {guard.attempts[:10]}"
    assert not failures, f"{len(failures)} of {len(results)}:\n" + "\n".join(failures[:60])


def run_one(world: World, case: Case, entry_point: str, tmp_path: Path) -> dict:
    """Send one case to one entry point inside a savepoint that is rolled back afterwards (every case meets the same world)."""
    body = fill(case.raw(), world.values)
    found: list[str] = []
    seconds, memory_mb = 0.0, None
    with transaction.atomic():
        before = table_counts()
        try:
            answer, seconds, memory_mb = measured(lambda: send(world, case, entry_point, body, tmp_path))
        except Exception as exc:  # a server error: the test client re-raises what would be a 500
            found.append(f"server error: {type(exc).__name__}: {str(exc)[:300]}")
            answer = None
        if answer is not None:
            found += problems(world, case, entry_point, answer)
            found += half_written(before, table_counts(), case, entry_point, answer)
        transaction.set_rollback(True)
    status = None if answer is None else answer.status
    return {"case": case.id, "entry_point": entry_point, "status": status, "expected": case.expect(entry_point)["status"],
            "problems": found, "seconds": seconds, "memory_mb": memory_mb}


def summary(results: list[dict], canary: Canary, guard: SocketGuard) -> dict:
    """The figures of the run, for RELIABILITY.md."""
    refused = [r for r in results if not r["problems"] and r["expected"] >= 400]
    per_reading = [r for r in results if not r["problems"] and r["expected"] == 202 and r["entry_point"].endswith("telemetry")]
    slowest = sorted(results, key=lambda r: -r["seconds"])[:10]
    return {
        "corpus_version": MANIFEST["corpus_version"], "cases": len(MANIFEST["case"]), "entry_points": len(MANIFEST["entry_points"]),
        "pairs": len(results), "passed": sum(not r["problems"] for r in results), "failed": sum(bool(r["problems"]) for r in results),
        "refused": len(refused), "rejected_per_reading": len(per_reading),
        # expected to pass: controls, IRIs that are only identifiers, keys no field reads, what the CGMES reader ignores
        "accepted_as_expected": sum(not r["problems"] for r in results) - len(refused) - len(per_reading),
        "server_errors": sum(any(p.startswith("server error") for p in r["problems"]) for r in results),
        "max_seconds": round(max(r["seconds"] for r in results), 3),
        "max_memory_mb": max((round(r["memory_mb"], 1) for r in results if r["memory_mb"] is not None), default=None),
        "bounds": MANIFEST["bounds"], "settings": MANIFEST["settings"],
        "outbound_connections": len(canary.connections) + len(guard.attempts),
        "command": "DATABASE_URL=… CELERY_BROKER_URL=… .venv/bin/python -m pytest -q tests/test_hostile_corpus.py",
        "measured_at": timezone.now().isoformat(timespec="seconds"),
        "seconds_by_entry_point": {name: round(sum(r["seconds"] for r in results if r["entry_point"] == name), 2)
                                   for name in MANIFEST["entry_points"]},
        "slowest": [{k: r[k] for k in ("case", "entry_point", "seconds", "memory_mb")} for r in slowest],
    }
