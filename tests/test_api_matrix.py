"""The API matrix: every endpoint under /api/v1/ × every method it allows × every persona, with the status it must answer.

The endpoints are read from the URL configuration, not listed by hand: an endpoint (or a method) without a row in
`MATRIX` fails the suite as "a new endpoint without rows", and a row whose endpoint is gone fails too. The expected
statuses are the policy of `sharing.decisions` (owner, gateway, agreement, deny) and the rules of ARCHITECTURE.md:
deny by default, out of scope is 404 (indistinguishable from absent), never a 5xx for a client's mistake.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlencode

import orjson
import pytest
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.views import APIView
from rest_framework.viewsets import ViewSetMixin

from ingest.testing import power_readings, readings_json
from sharing import access_requests
from sharing.api.base import PolicyViewSet
from sharing.datasets import offer_datasets
from sharing.models import AccessRequest, Agreement, DatasetOffer
from tests.hub import (
    PERSONAS,
    PURPOSE,
    START,
    HubWorld,
    agreement_in_state,
    agreement_terms,
    hub_world_create,
    offer_create,
    participant_create,
)
from twin import history
from twin import models as twin

pytestmark = pytest.mark.django_db

API_PREFIX = "api/v1/"
PLOT = "voltage-profile"
ABSENT_PK = 2**31 - 7  # an id no row has

# --- Named rows: the status each persona gets ----------------------------------------------------------------------
# Credentials that do not act as an operator: consumer API clients (scope shared:read only) and the gateway key.
NOT_OPERATOR = {"consumer": 403, "consumer_wrong_purpose": 403, "expired": 403, "revoked": 403, "suspended": 403, "gateway": 403,
                "anonymous": 401}


def owner_row(provider: int, outsider: int | None = None) -> dict[str, int]:
    """Owner policy: the provider's operators (and its steward, also an operator) get `provider`; the outsider is an operator
    too, of a participant that owns nothing here, so it gets `outsider` (default: the same, on its own empty rows)."""
    elsewhere = provider if outsider is None else outsider
    return {"provider_operator": provider, "provider_steward": provider, "outsider": elsewhere, "consumer_steward": elsewhere,
            **NOT_OPERATOR}


OPERATOR_LIST = owner_row(200)  # the outsider lists its own rows: none
OPERATOR_DETAIL = owner_row(200, outsider=404)  # the provider's object is out of the outsider's scope
GATEWAY_READ = {"gateway": 200}  # a gateway follows its own batches
EVERYONE = {persona: 200 for persona in PERSONAS} | {"anonymous": 401}
PARTICIPANTS = EVERYONE | {"gateway": 403}  # any credential of a participant but a gateway key
# The world's agreement: its parties read it (whatever purpose they declare); the other consumers and the outsider get the
# 404 of an absent one.
AGREEMENT_PARTIES = PARTICIPANTS | {"expired": 404, "revoked": 404, "suspended": 404, "outsider": 404}
# The catalog: every consumer reads its own (no purpose needed); one dataset is 404 outside the caller's catalog.
CATALOG_DATASET = PARTICIPANTS | {"provider_operator": 404, "provider_steward": 404, "expired": 404, "revoked": 404, "suspended": 404,
                                  "outsider": 404}
SHARED_READ = {"provider_operator": 404, "provider_steward": 404, "consumer": 200, "consumer_wrong_purpose": 403, "consumer_steward": 200,
               "expired": 404, "revoked": 404, "suspended": 404, "outsider": 404, "gateway": 403, "anonymous": 401}


def steward_only(status: int, consumer_steward: int = 404) -> dict[str, int]:
    """Writes of a steward: the provider's steward gets `status`; the consumer's steward is a steward too, but of another
    participant (`consumer_steward`: 404 for the provider's objects, or what its own participant's write gets)."""
    return {persona: 403 for persona in PERSONAS} | {"provider_steward": status, "consumer_steward": consumer_steward, "anonymous": 401}


# Access requests: a consumer's own (its API client, its users and its steward), reviewed by the provider's steward.
REQUEST_PARTIES = PARTICIPANTS | {"provider_operator": 404, "expired": 404, "revoked": 404, "suspended": 404, "outsider": 404}
REQUEST_ANSWER = REQUEST_PARTIES | {"provider_steward": 404}
REQUEST_MAKERS = PARTICIPANTS | {"provider_operator": 404, "provider_steward": 404, "consumer": 201, "consumer_wrong_purpose": 201,
                                 "consumer_steward": 201, "expired": 201, "revoked": 201, "suspended": 201, "outsider": 201}


def gateway_only(status: int) -> dict[str, int]:
    return {persona: 403 for persona in PERSONAS} | {"gateway": status, "anonymous": 401}


def read(name: str, row: dict[str, int], options: dict[str, int] | None = None) -> dict[tuple[str, str], dict[str, int]]:
    """GET and HEAD answer alike; OPTIONS is decided like a read but looks up no object (so defaults to the list row)."""
    return {(name, "GET"): row, (name, "HEAD"): row, (name, "OPTIONS"): options or row}


def write(name: str, row: dict[str, int], options: dict[str, int]) -> dict[tuple[str, str], dict[str, int]]:
    return {(name, "POST"): row, (name, "OPTIONS"): options}


OPERATOR_ASSETS = ("feeder", "basevoltage", "bus", "externalgrid", "line", "transformer", "switch", "load", "staticgenerator",
                   "storage", "evcharger", "meter")
SHARED_ASSETS = ("bus", "external_grid", "line", "transformer", "switch", "load", "static_generator", "storage", "ev_charger", "meter")

MATRIX: dict[tuple[str, str], dict[str, int]] = {
    # Operator API: grids and assets of the grids one owns.
    **write("model-list", owner_row(400), options=OPERATOR_LIST),  # an empty upload is a 400 for whoever may publish
    **read("grid-list", OPERATOR_LIST),
    **read("grid-detail", OPERATOR_DETAIL, options=OPERATOR_LIST),
    **read("grid-rdf", OPERATOR_DETAIL, options=OPERATOR_LIST),
    **write("grid-changes", owner_row(400, outsider=404), options=OPERATOR_LIST),
    **{key: row for name in ("grid-version-list", "grid-version-detail", "grid-version-diff", "grid-cgmes-list")  # a grid one may read
       for key, row in read(name, OPERATOR_DETAIL, options=OPERATOR_LIST).items()},
    **{key: row for asset in OPERATOR_ASSETS for key, row in
       {**read(f"{asset}-list", OPERATOR_LIST), **read(f"{asset}-detail", OPERATOR_DETAIL, options=OPERATOR_LIST)}.items()},
    # Load flows.
    **read("loadflow-run-list", OPERATOR_LIST),
    ("loadflow-run-list", "POST"): owner_row(202, outsider=404),  # queued; the outsider may not run the provider's grid
    **read("loadflow-run-detail", OPERATOR_DETAIL, options=OPERATOR_LIST),
    **read("loadflow-run-results", OPERATOR_DETAIL, options=OPERATOR_LIST),
    **read("loadflow-run-violations", OPERATOR_DETAIL, options=OPERATOR_LIST),
    **read("loadflow-run-en50160", owner_row(409, outsider=404), options=OPERATOR_LIST),  # the world's run is a snapshot: 409
    **read("loadflow-run-hosting-capacity", OPERATOR_DETAIL, options=OPERATOR_LIST),
    **read("loadflow-run-plots", OPERATOR_DETAIL, options=OPERATOR_LIST),
    **read("loadflow-violation-list", OPERATOR_LIST),
    # Telemetry.
    **read("telemetry-batch-list", OPERATOR_LIST | GATEWAY_READ),
    ("telemetry-batch-list", "POST"): gateway_only(202),
    **read("telemetry-batch-detail", OPERATOR_DETAIL | GATEWAY_READ, options=OPERATOR_LIST | GATEWAY_READ),
    **read("telemetry-batch-rejected", OPERATOR_DETAIL | GATEWAY_READ, options=OPERATOR_LIST | GATEWAY_READ),
    **read("telemetry-readings", OPERATOR_DETAIL, options=OPERATOR_LIST),  # the outsider names the provider's meter: 404
    **read("telemetry-latest", OPERATOR_DETAIL, options=OPERATOR_LIST),  # … and the provider's grid: 404
    **read("telemetry-quantities", EVERYONE),  # the vocabulary is public
    # The hub.
    **read("agreement-list", PARTICIPANTS),
    ("agreement-list", "POST"): steward_only(201, consumer_steward=201),  # the consumer's steward drafts its own
    **read("agreement-detail", AGREEMENT_PARTIES, options=PARTICIPANTS),
    **{key: row for step in ("offer", "activate", "suspend", "revoke")
       for key, row in write(f"agreement-{step}", steward_only(200), options=PARTICIPANTS).items()},
    **write("agreement-amend", steward_only(201), options=PARTICIPANTS),
    **read("audit-list", OPERATOR_LIST),
    **read("owner-consent-list", OPERATOR_LIST),
    ("owner-consent-list", "POST"): owner_row(201),  # one's own consent, for any grid IRI
    **write("sharing-decisions", PARTICIPANTS, options=PARTICIPANTS),
    # Offers (the provider's stewards write, its operators read) and access requests.
    **read("offer-list", OPERATOR_LIST),
    ("offer-list", "POST"): steward_only(201, consumer_steward=400),  # the consumer's steward names a grid that is not its own
    **read("offer-detail", OPERATOR_DETAIL, options=OPERATOR_LIST),
    ("offer-detail", "PATCH"): steward_only(200) | {"provider_operator": 403, "outsider": 403},
    **read("access-request-list", PARTICIPANTS),
    ("access-request-list", "POST"): REQUEST_MAKERS,  # the provider asks its own offer: no such dataset in its catalog
    **read("access-request-detail", REQUEST_PARTIES, options=PARTICIPANTS),
    **{key: row for step in ("approve", "reject", "counter")
       for key, row in write(f"access-request-{step}", steward_only(200), options=PARTICIPANTS).items()},
    **{key: row for step in ("accept", "decline", "withdraw")
       for key, row in write(f"access-request-{step}", REQUEST_ANSWER, options=PARTICIPANTS).items()},
    # Third-party views: one agreement in force for the declared purpose.
    **{key: row for name in ("shared-run-list", "shared-run-detail", "shared-run-results", "shared-topology", "shared-telemetry",
                             "shared-violations", "shared-hosting-capacity", *(f"shared-{t}-list" for t in SHARED_ASSETS))
       for key, row in read(name, SHARED_READ).items()},
    **read("shared-sparql", SHARED_READ),
    ("shared-sparql", "POST"): SHARED_READ,
    **read("shared-catalog-list", PARTICIPANTS),
    **read("shared-catalog-detail", CATALOG_DATASET, options=PARTICIPANTS),
}


# --- The endpoints, from the URL configuration -----------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    name: str
    route: str  # the concatenated pattern, e.g. api/v1/^grids/(?P<pk>[^/.]+)/?$
    view: type
    methods: tuple[str, ...]

    @property
    def parameters(self) -> set[str]:
        return set(re.findall(r"\(\?P<(\w+)>", self.route)) | set(re.findall(r"<(?:\w+:)?(\w+)>", self.route))


def _patterns(patterns, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _patterns(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern


def _methods(callback) -> tuple[str, ...]:
    actions = getattr(callback, "actions", None)
    if actions is not None:  # a viewset: its method → action mapping (DRF adds HEAD for GET on the first request)
        methods = {method.upper() for method in actions}
    else:
        cls = callback.cls
        methods = {method.upper() for method in cls.http_method_names if hasattr(cls, method) and method != "options"}
    if "GET" in methods:
        methods.add("HEAD")
    methods.add("OPTIONS")  # every DRF view answers OPTIONS (metadata), decided as a read
    return tuple(sorted(methods))


def endpoints() -> list[Endpoint]:
    """Every DRF view under /api/v1/, with its name and the methods it allows."""
    found = []
    for route, pattern in _patterns(get_resolver().url_patterns):
        if not route.startswith(API_PREFIX):
            continue
        callback = pattern.callback
        view = getattr(callback, "cls", None)
        assert view is not None and issubclass(view, APIView), f"{route} is not a DRF view: it would escape the decision point"
        assert pattern.name, f"{route} has no URL name: the matrix keys rows by name"
        found.append(Endpoint(name=pattern.name, route=route, view=view, methods=_methods(callback)))
    names = [e.name for e in found]
    assert len(names) == len(set(names)), f"URL names used twice under /{API_PREFIX}: {sorted({n for n in names if names.count(n) > 1})}"
    return found


def coverage_problems(found: list[Endpoint]) -> list[str]:
    """Endpoints × methods without rows, rows without endpoints, rows that do not name every persona."""
    present = {(e.name, method) for e in found for method in e.methods}
    problems = [f"a new endpoint without rows: {name} {method} — add it to MATRIX" for name, method in sorted(present - MATRIX.keys())]
    problems += [f"a MATRIX row whose endpoint no longer exists: {name} {method}" for name, method in sorted(MATRIX.keys() - present)]
    problems += [f"MATRIX row {key} does not name exactly the personas {PERSONAS}" for key, row in MATRIX.items()
                 if set(row) != set(PERSONAS)]
    return problems


# --- Requests ------------------------------------------------------------------------------------------------------
@dataclass
class Call:
    kwargs: dict
    query: dict
    body: bytes = b""
    content_type: str = "application/octet-stream"


@dataclass
class Matrix:
    """The world of tests.hub, with one asset of every kind in feeder 0 and a participant for throwaway agreements."""

    world: HubWorld
    pks: dict[str, int]
    throwaway: twin.Participant
    agreements: dict[tuple[str, bool], int] = field(default_factory=dict)  # (step, steward's?) → throwaway agreement
    offer: DatasetOffer | None = None


def matrix_create() -> Matrix:
    world = hub_world_create(feeders=3, meters_per_feeder=2, steps=4)
    grid, feeder = world.grid, world.feeders[0]
    bus = twin.Bus.objects.filter(grid=grid, feeder=feeder).order_by("id").first()
    # metered_grid_create makes buses and meters only: add one row of every other kind, so every detail route has an object.
    hv = twin.BaseVoltage.objects.create(iri=f"{grid.iri}/voltage/20", grid=grid, name="20 kV", nominal_voltage_kv=20.0)
    hv_bus = twin.Bus.objects.create(iri=f"{grid.iri}/bus/hv", grid=grid, base_voltage=hv, name="hv")
    far = twin.Bus.objects.create(iri=f"{grid.iri}/bus/0-far", grid=grid, base_voltage=bus.base_voltage, feeder=feeder, name="0 far")
    common = {"grid": grid, "feeder": feeder}
    rows = {
        "externalgrid": twin.ExternalGrid(iri=f"{grid.iri}/ext", bus=hv_bus, vm_target_kv=20.0, **common),
        "transformer": twin.Transformer(iri=f"{grid.iri}/trafo", hv_bus=hv_bus, lv_bus=bus, sn_mva=0.4, vn_hv_kv=20.0, vn_lv_kv=0.4,
                                        r_ohm=0.05, x_ohm=0.2, **common),
        "line": twin.Line(iri=f"{grid.iri}/line", from_bus=bus, to_bus=far, length_km=0.2, r_ohm=0.04, x_ohm=0.016, **common),
        "switch": twin.Switch(iri=f"{grid.iri}/switch", bus=bus, other_bus=far, **common),
        "load": twin.Load(iri=f"{grid.iri}/load", bus=far, p_mw=0.004, q_mvar=0.001, **common),
        "staticgenerator": twin.StaticGenerator(iri=f"{grid.iri}/pv", bus=far, p_mw=0.005, **common),
        "storage": twin.Storage(iri=f"{grid.iri}/battery", bus=far, max_e_mwh=0.01, **common),
        "evcharger": twin.EVCharger(iri=f"{grid.iri}/ev", bus=far, max_p_mw=0.011, **common),
    }
    for row in rows.values():
        row.save()
    history.grid_version_record(grid=grid, author=history.Author(via="test"))  # version 1, for the history routes
    pks = {name: row.pk for name, row in rows.items()} | {
        "grid": grid.pk, "feeder": feeder.pk, "basevoltage": bus.base_voltage_id, "bus": bus.pk, "meter": world.meters[0].pk,
        "loadflow-run": world.run.pk, "shared-run": world.run.pk, "telemetry-batch": world.batch.pk, "agreement": world.agreement.pk,
        "shared-catalog": f"g{grid.pk}-f{feeder.pk}-telemetry"}  # the consumer's granted telemetry dataset
    offer = offer_create(world.provider, grid, feeder_iris=[f.iri for f in world.feeders[1:]])
    pks |= {"offer": offer.pk, "access-request": matrix_request(world, offer).pk}
    for client in {id(c): c for c in world.clients.values()}.values():
        client.raise_request_exception = False  # a 5xx is a finding to report, not an exception that stops the matrix
    return Matrix(world=world, pks=pks, throwaway=participant_create("Matrix Throwaway", ["aggregator"]), offer=offer)


def matrix_request(world: HubWorld, offer: DatasetOffer, state: str = "pending") -> AccessRequest:
    """A request of the world's consumer for the offer's first dataset, pending or `offered` (approved as an offer); from
    tomorrow on, so that the agreements its approvals put in force do not join the world's agreement today."""
    tomorrow = timezone.now() + timedelta(days=1)
    req = access_requests.request_create(consumer=world.consumer, datasets=[offer_datasets(offer)[0].id], purpose=PURPOSE,
                                         valid_from=tomorrow, valid_until=tomorrow + timedelta(days=30))
    if state == "offered":
        req = access_requests.request_approve(req=req, actor=world.provider, activate=False)
    return req


def json_body(data: dict) -> tuple[bytes, str]:
    return orjson.dumps(data), "application/json"


def agreement_body(m: Matrix) -> dict:
    terms = agreement_terms(m.world.provider, m.throwaway)
    return {**terms, "consumer": m.throwaway.iri, "valid_from": terms["valid_from"].isoformat(),
            "valid_until": terms["valid_until"].isoformat()}


# State a throwaway agreement must be in for each lifecycle step (offer needs a draft, suspend an active one, …).
STEP_FROM = {"offer": "draft", "activate": "offered", "suspend": "active", "revoke": "active", "amend": "active"}
# State a request must be in for each of its steps; every cell gets its own (several personas may take the step).
REQUEST_STEP_FROM = {"approve": "pending", "reject": "pending", "counter": "pending", "withdraw": "pending", "accept": "offered",
                     "decline": "offered"}
TELEMETRY_WINDOW = {"quantity": "active_power", "start": START.isoformat(), "end": (START + timedelta(hours=2)).isoformat()}


def pk_of(m: Matrix, name: str) -> int:
    """The world's object for a detail route, by the route's basename (`loadflow-run-results` → the run)."""
    return m.pks[max((key for key in m.pks if name.startswith(f"{key}-")), key=len)]


# Minimal bodies, valid for whoever may POST (an empty RDF upload is a 400 even for them); lifecycle steps get a reason.
POST_BODIES: dict[str, Callable[[Matrix, str], tuple[bytes, str]]] = {
    "model-list": lambda m, persona: (b"", "text/turtle"),
    "grid-changes": lambda m, persona: (b"", "text/turtle"),
    "loadflow-run-list": lambda m, persona: json_body({"grid": m.world.grid.pk, "kind": "snapshot", "at": "2024-05-01T12:00:00Z"}),
    "telemetry-batch-list": lambda m, persona: (
        readings_json(power_readings([m.world.meters[0].pk], START + timedelta(days=1), 1)), "application/json"),
    "agreement-list": lambda m, persona: json_body(agreement_body(m)),
    "agreement-amend": lambda m, persona: json_body({"min_group_size": 6}),
    "owner-consent-list": lambda m, persona: json_body({"grid_iri": "https://gridtwin.example/id/grid/elsewhere"}),
    "sharing-decisions": lambda m, persona: json_body({"action": "view", "resource": "shared.telemetry",
                                                       "purpose": m.world.purposes[persona]}),
    "offer-list": lambda m, persona: json_body({"title": "matrix", "grid": m.world.grid.iri, "categories": ["topology"],
                                                "purposes": [PURPOSE]}),
    "access-request-list": lambda m, persona: json_body({"datasets": [offer_datasets(m.offer)[0].id], "purpose": PURPOSE,
                                                         "valid_until": (timezone.now() + timedelta(days=30)).isoformat()}),
    "access-request-counter": lambda m, persona: json_body({"resolution": "day", "reason": "api matrix"}),
    "shared-sparql": lambda m, persona: (b"ASK { ?s ?p ?o }", "application/sparql-query"),
}


def call_for(m: Matrix, endpoint: Endpoint, method: str, persona: str) -> Call:
    """The request of one cell: the route's arguments from the world, `?purpose=`, a minimal body for POSTs."""
    world, name = m.world, endpoint.name
    kwargs: dict = {}
    if "pk" in endpoint.parameters:
        step = name.removeprefix("agreement-")
        request_step = name.removeprefix("access-request-")
        if request_step in REQUEST_STEP_FROM and method == "POST":
            kwargs["pk"] = matrix_request(world, m.offer, REQUEST_STEP_FROM[request_step]).pk
        elif step in STEP_FROM and method == "POST":
            # A throwaway agreement per row for the steward, whose step changes it, and one for everyone else, who are
            # refused before it is looked up (were one of them not, its own cell would say so).
            key = (step, persona == "provider_steward")
            if key not in m.agreements:
                m.agreements[key] = agreement_in_state(world.provider, m.throwaway, STEP_FROM[step]).pk
            kwargs["pk"] = m.agreements[key]
        else:
            kwargs["pk"] = pk_of(m, name)
    if "picture" in endpoint.parameters:
        kwargs["picture"] = PLOT
    kwargs |= history_kwargs(endpoint, m.pks["grid"])
    query = {"purpose": world.purposes[persona]}
    if name == "grid-version-diff":
        query |= {"from": 1, "to": 1}
    if name == "telemetry-readings":
        query |= {**TELEMETRY_WINDOW, "point": world.meters[0].pk}
    elif name == "telemetry-latest":
        query |= {"grid": world.grid.pk, "quantity": "active_power"}
    elif name == "shared-telemetry":
        query |= TELEMETRY_WINDOW
    elif name == "shared-sparql" and method != "POST":
        query |= {"query": "ASK { ?s ?p ?o }"}
    call = Call(kwargs=kwargs, query=query)
    if method == "PATCH":
        call.body, call.content_type = json_body({"published": True})
    if method == "POST":
        call.body, call.content_type = POST_BODIES.get(name, lambda m, persona: json_body({"reason": "api matrix"}))(m, persona)
    return call


def history_kwargs(endpoint: Endpoint, grid_pk: int) -> dict:
    """The route arguments of a grid's history (`grids/{grid_pk}/versions/{number}`): that grid, version 1."""
    return {name: value for name, value in (("grid_pk", grid_pk), ("number", 1)) if name in endpoint.parameters}


def send(m: Matrix, endpoint: Endpoint, method: str, persona: str):
    call = call_for(m, endpoint, method, persona)
    url = reverse(endpoint.name, kwargs=call.kwargs) + "?" + urlencode(call.query, doseq=True)
    return m.world.clients[persona].generic(method, url, call.body, content_type=call.content_type), url


def excerpt(response) -> str:
    if getattr(response, "exc_info", None):
        return repr(response.exc_info[1])[:200]
    return bytes(getattr(response, "content", b"") or b"")[:200].decode("utf-8", "replace")


def test_every_endpoint_method_and_persona_answers_as_the_policy_says():
    found = endpoints()
    problems = coverage_problems(found)
    m = matrix_create()
    cells = 0
    for endpoint in found:
        for method in endpoint.methods:
            expected_row = MATRIX.get((endpoint.name, method))
            if expected_row is None:
                continue
            for persona in PERSONAS:
                savepoint = transaction.savepoint()
                response, url = send(m, endpoint, method, persona)
                got = response.status_code
                if got >= 500:  # a failed request may leave the transaction aborted: undo it, keep the world
                    transaction.savepoint_rollback(savepoint)
                else:
                    transaction.savepoint_commit(savepoint)
                cells += 1
                expected = expected_row.get(persona)
                if got != expected:
                    problems.append(f"{endpoint.name} {method} {url} as {persona}: expected {expected}, got {got}: {excerpt(response)}")
    assert cells > 1000, f"only {cells} cells ran"
    assert not problems, f"{len(problems)} of {cells} cells differ:\n" + "\n".join(problems)


def test_the_matrix_has_a_row_for_every_endpoint_and_nothing_else():
    problems = coverage_problems(endpoints())  # also part of the matrix test; here it fails fast, without a database
    assert not problems, "\n".join(problems)


# --- What an out-of-scope answer shows -----------------------------------------------------------------------------
def secrets_of(m: Matrix) -> list[str]:
    """What no out-of-scope answer may contain: the provider's grid IRI (the prefix of every IRI in it) and names."""
    world = m.world
    return [world.grid.iri, world.grid.name, world.provider.iri, world.provider.name, *(f.name for f in world.feeders),
            world.meters[0].name]


def same_answer(present, absent, present_key: object = None, absent_key: object = None) -> bool:
    """Two answers alike once the key each request named (echoed in its message) is blanked out."""
    def text(response, key) -> str:
        body = bytes(response.content).decode("utf-8", "replace")
        return re.sub(rf"\b{re.escape(str(key))}\b", "KEY", body) if key is not None else body
    return present.status_code == absent.status_code and text(present, present_key) == text(absent, absent_key)


def test_out_of_scope_answers_are_404_like_absent_and_show_nothing_of_the_provider():
    found = endpoints()
    m = matrix_create()
    world, secrets = m.world, secrets_of(m)
    problems: list[str] = []
    checked = 0

    def leaks(response) -> list[str]:
        body = bytes(response.content).decode("utf-8", "replace")
        return [s for s in secrets if s and s in body]

    def ask(persona: str, name: str, pk: int | None = None, method: str = "GET", **params):
        endpoint = next(e for e in found if e.name == name)
        kwargs = history_kwargs(endpoint, pk) if "grid_pk" in endpoint.parameters else {"pk": pk} if pk is not None else {}
        if "picture" in endpoint.parameters:
            kwargs["picture"] = PLOT
        url = reverse(name, kwargs=kwargs) + "?" + urlencode({"purpose": world.purposes[persona], **params}, doseq=True)
        return world.clients[persona].generic(method, url), url

    outsider = "outsider"
    audit, _ = ask(outsider, "audit-list")  # before any other request of the outsider's: its audit is still empty
    if audit.status_code != 200 or audit.json()["results"] != []:
        problems.append(f"audit-list as outsider: {audit.status_code} {excerpt(audit)}")
    for endpoint in found:
        if "GET" not in endpoint.methods or endpoint.name.startswith("shared-") or endpoint.name == "audit-list":
            continue
        if endpoint.name.endswith("-list") and "grid_pk" not in endpoint.parameters:
            for params in ({}, {"grid": world.grid.pk}):  # a filter naming the provider's grid is an empty page, like an absent id
                response, url = ask(outsider, endpoint.name, **params)
                results = response.json().get("results") if response.status_code == 200 else None
                checked += 1
                if results != [] or leaks(response):
                    problems.append(f"{url} as outsider: {response.status_code}, results {results!r}, leaks {leaks(response)}")
        elif endpoint.parameters & {"pk", "grid_pk"}:
            pk = pk_of(m, endpoint.name)
            for method in ("GET", "OPTIONS"):
                present, url = ask(outsider, endpoint.name, pk, method)
                absent, _ = ask(outsider, endpoint.name, ABSENT_PK, method)
                checked += 1
                if (method == "GET" and present.status_code != 404) or leaks(present) or not same_answer(present, absent):
                    problems.append(f"{method} {url} as outsider: {present.status_code} {excerpt(present)} — absent id: "
                                    f"{absent.status_code} {excerpt(absent)}; leaks {leaks(present)}")
    meter = world.meters[0].pk
    for name, key, params in (("telemetry-readings", "point", TELEMETRY_WINDOW), ("telemetry-latest", "grid", {})):
        value = meter if key == "point" else world.grid.pk
        present, url = ask(outsider, name, **params, **{key: value})
        absent, _ = ask(outsider, name, **params, **{key: ABSENT_PK})
        checked += 1
        if present.status_code != 404 or leaks(present) or not same_answer(present, absent, value, ABSENT_PK):
            problems.append(f"{url} as outsider: {present.status_code} {excerpt(present)} — absent: {excerpt(absent)}")

    # Third-party views: whoever has no agreement in force gets the 404 of an absent object, with nothing in it.
    other_owner = participant_create("Other Utility", ["dso"])
    other_grid = twin.Grid.objects.create(iri="https://gridtwin.example/id/test/other", name="other", owner=other_owner)
    other_run = twin.LoadFlowRun.objects.create(grid=other_grid, status=twin.LoadFlowRun.Status.SUCCEEDED, at=START)
    for persona in ("outsider", "expired", "revoked", "suspended", "provider_operator"):
        # The catalog list is not out of scope for anyone: each persona reads its own (offers published to it included).
        for endpoint in (e for e in found if e.name.startswith("shared-") and e.name != "shared-catalog-list"):
            pk = pk_of(m, endpoint.name) if "pk" in endpoint.parameters else None
            response, url = ask(persona, endpoint.name, pk, **(TELEMETRY_WINDOW if endpoint.name == "shared-telemetry" else {}))
            checked += 1
            if response.status_code != 404 or leaks(response):
                problems.append(f"{url} as {persona}: {response.status_code} {excerpt(response)}")
    consumer = "consumer"
    for name in ("shared-run-detail", "shared-run-results"):  # a run outside the agreement's grids is as absent as no run
        present, url = ask(consumer, name, other_run.pk)
        absent, _ = ask(consumer, name, ABSENT_PK)
        checked += 1
        if present.status_code != 404 or not same_answer(present, absent) or other_grid.iri.encode() in present.content:
            problems.append(f"{url} as consumer: {present.status_code} {excerpt(present)} — absent: {excerpt(absent)}")
    hidden = [f.iri for f in world.feeders[1:]] + [f'{world.grid.iri}/bus/{k}"' for k in (1, 2)]  # the agreement covers feeder 0
    for name in (*(f"shared-{t}-list" for t in SHARED_ASSETS), "shared-topology", "shared-violations", "shared-run-results",
                 "shared-telemetry", "shared-hosting-capacity"):
        response, url = ask(consumer, name, world.run.pk if name == "shared-run-results" else None,
                            **(TELEMETRY_WINDOW if name == "shared-telemetry" else {}))
        shown = [iri for iri in hidden if iri in bytes(response.content).decode()]
        checked += 1
        if response.status_code != 200 or shown:
            problems.append(f"{url} as consumer: {response.status_code}, shows out-of-scope {shown}: {excerpt(response)}")
    for name in ("shared-meter-list", "shared-bus-list", "shared-telemetry"):  # a filter naming a feeder beyond the scope
        window = TELEMETRY_WINDOW if name == "shared-telemetry" else {}
        present, url = ask(consumer, name, feeder=world.feeders[1].iri, **window)
        absent, _ = ask(consumer, name, feeder=f"{world.grid.iri}/feeder/none", **window)
        checked += 1
        if not same_answer(present, absent) or [iri for iri in hidden if iri in bytes(present.content).decode()]:
            problems.append(f"{url} as consumer: {present.status_code} {excerpt(present)} — absent feeder: {excerpt(absent)}")
    # A steward of the consumer is a party to the agreement but not its provider: it reads it, and may change only its own.
    foreign = world.clients["consumer_steward"]
    for step in STEP_FROM:
        present = foreign.post(f"/api/v1/sharing/agreements/{world.agreement.pk}/{step}", {}, format="json")
        absent = foreign.post(f"/api/v1/sharing/agreements/{ABSENT_PK}/{step}", {}, format="json")
        checked += 1
        if present.status_code != 404 or not same_answer(present, absent):
            problems.append(f"{step} the provider's agreement as the consumer's steward: {present.status_code} {excerpt(present)}")
    assert foreign.get(f"/api/v1/sharing/agreements/{world.agreement.pk}").status_code == 200
    assert Agreement.objects.get(pk=world.agreement.pk).status == Agreement.Status.ACTIVE
    meters, _ = ask(consumer, "shared-meter-list")
    assert {row["feeder"] for row in meters.json()["results"]} == {world.feeders[0].iri}, "the consumer sees its own scope"
    assert checked > 150, f"only {checked} answers were checked"
    assert not problems, "\n".join(problems)


# --- Every endpoint goes through the decision point ----------------------------------------------------------------
GUARDED = ("get_queryset", "initial", "finalize_response")  # where the decision is made, applied and audited


def test_every_view_is_a_policy_viewset_that_keeps_the_decisions_rows():
    problems = []
    views = {e.view for e in endpoints()}
    views |= {pattern.callback.cls for _, pattern in _patterns(get_resolver().url_patterns)
              if getattr(pattern.callback, "actions", None) is not None}  # viewsets mounted anywhere, too
    for view in sorted(views, key=lambda v: v.__name__):
        if not issubclass(view, PolicyViewSet):
            problems.append(f"{view.__module__}.{view.__name__} is not a sharing.api.base.PolicyViewSet: it bypasses the decision point")
            continue
        if not issubclass(view, ViewSetMixin):
            problems.append(f"{view.__name__} is not a viewset")
        for klass in view.__mro__[: view.__mro__.index(PolicyViewSet)]:
            for method in GUARDED:
                if method in vars(klass) and f"super().{method}(" not in inspect.getsource(vars(klass)[method]):
                    problems.append(f"{klass.__module__}.{klass.__name__}.{method} does not call super().{method}(): "
                                    "it replaces the decision's rows or skips the decision or its audit")
    assert not problems, "\n".join(problems)


# --- A client's mistake is a 4xx, never a 5xx ----------------------------------------------------------------------
def test_client_mistakes_on_the_hub_answer_4xx():
    m = matrix_create()
    world, steward = m.world, m.world.clients["provider_steward"]
    active = agreement_in_state(world.provider, m.throwaway, "active")
    amended = agreement_in_state(world.provider, m.throwaway, "active")
    assert steward.post(f"/api/v1/sharing/agreements/{amended.pk}/amend", {"min_group_size": 6}, format="json").status_code == 201
    terms = agreement_body(m)
    probes: list[tuple[str, Callable[[], object], int]] = [
        ("offer an active agreement", lambda: steward.post(f"/api/v1/sharing/agreements/{active.pk}/offer"), 409),
        ("amend an agreement twice", lambda: steward.post(f"/api/v1/sharing/agreements/{amended.pk}/amend", {"min_group_size": 7},
                                                          format="json"), 409),
        ("an agreement that ends before it starts", lambda: steward.post("/api/v1/sharing/agreements", {
            **terms, "valid_until": terms["valid_from"]}, format="json"), 400),
        ("an agreement with oneself", lambda: steward.post("/api/v1/sharing/agreements", {**terms, "consumer": world.provider.iri},
                                                           format="json"), 400),
        ("an id beyond bigint", lambda: steward.get(f"/api/v1/grids/{2**70}"), 404),
        ("a shared run id beyond bigint", lambda: world.clients["consumer"].get(f"/api/v1/shared/loadflow/runs/{2**70}",
                                                                                 {"purpose": world.purposes["consumer"]}), 404),
    ]
    problems = []
    for what, request, expected in probes:
        savepoint = transaction.savepoint()
        response = request()
        if response.status_code >= 500:
            transaction.savepoint_rollback(savepoint)
        else:
            transaction.savepoint_commit(savepoint)
        if response.status_code != expected:
            problems.append(f"{what}: expected {expected}, got {response.status_code}: {excerpt(response)}")
    assert Agreement.objects.get(pk=active.pk).status == Agreement.Status.ACTIVE
    assert not problems, "\n".join(problems)
