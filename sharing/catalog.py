"""The catalog of one consumer (DCAT 3 in JSON-LD): the datasets its agreements in force grant and those it may request.

A dataset is one grid or feeder × one data category (`sharing.datasets`). A consumer's catalog holds:

* **granted** datasets: those of its agreements in force (`sharing.decisions.agreements_in_force`), each with the
  agreement as `odrl:hasPolicy` (an `odrl:Agreement`: uid, parties, terms as constraints, and the `?agreement=` and
  `?purpose=` to read it with);
* **requestable** datasets: those of published `DatasetOffer` rows of other providers whose `audience` is empty or
  shares a role with the consumer, each with the offer as an `odrl:Offer` (purposes, finest resolution, groups and k,
  dropped fields, longest period); and those of agreements offered to the consumer (status `offered`, still valid),
  shown as `odrl:Offer` with `gt:awaitingAnswer true`. Which offers a participant sees is
  `sharing.access_requests.visible_offers`, the rule a request is checked against.

A dataset in both lists carries every policy. The catalog is built for one participant at a time with a fixed number
of queries (six), whatever the number of agreements and offers.

The JSON-LD has an inline `@context` only. Distributions: one per format (JSON, JSON-LD, Turtle) of the REST endpoint
that serves the category (all asset lists for asset metadata, as several `dcat:accessURL`s), and for telemetry one
per format and resolution the policies allow: 15 minutes, hour, day (`dcat:temporalResolution` PT15M, PT1H, P1D) and,
where a policy grants raw data, a raw distribution without `dcat:temporalResolution` (raw readings come at each
meter's own interval: there is no resolution limit to state; `gt:resolution "raw"` names it). Categories the SPARQL
view serves (`sharing.decisions.SHARED["shared.sparql"]`) also get a SPARQL distribution.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson
import pyoxigraph as ox
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from rdflib import Literal, URIRef

from sharing.access_requests import visible_offers
from sharing.datasets import DatasetKey
from sharing.decisions import SHARED, agreements_in_force
from sharing.models import ASSET_TYPES, PURPOSE_IRIS, RESOLUTION_ORDER, Agreement, DataCategory, DatasetOffer, Resolution
from sharing.odrl import PERMISSION_CONSTRAINTS, PROHIBITED_ACTIONS, RESOLUTION_DURATIONS
from sharing.scope import MODEL_OF_TYPE
from twin import models as twin

DCAT = "http://www.w3.org/ns/dcat#"
DCT = "http://purl.org/dc/terms/"
ODRL = "http://www.w3.org/ns/odrl/2/"
GT = "https://w3id.org/gridtwin/ontology#"
XSD = "http://www.w3.org/2001/XMLSchema#"
PROFILE = "https://w3id.org/gridtwin/odrl-profile"
PREFIXES = {"dcat": DCAT, "dct": DCT, "foaf": "http://xmlns.com/foaf/0.1/", "odrl": ODRL, "skos": "http://www.w3.org/2004/02/skos/core#",
            "rdfs": "http://www.w3.org/2000/01/rdf-schema#", "xsd": XSD, "gt": GT, "hydra": "http://www.w3.org/ns/hydra/core#"}
# Inline only (never a remote context): prefixes, and the page's place as Hydra terms.
CONTEXT = {**PREFIXES, "count": "hydra:totalItems", "limit": "hydra:limit", "offset": "hydra:offset",
           "next": {"@id": "hydra:next", "@type": "@id"}, "previous": {"@id": "hydra:previous", "@type": "@id"}}

# Themes: the data category as a concept of the gridtwin data categories, and the EU data theme "Energy".
CATEGORY_SCHEME = "https://w3id.org/gridtwin/data-category"
EU_THEMES = "http://publications.europa.eu/resource/authority/data-theme"
ENERGY_THEME = {"@id": f"{EU_THEMES}/ENER", "@type": "skos:Concept", "skos:prefLabel": "Energy", "skos:inScheme": {"@id": EU_THEMES}}
THEME_TAXONOMIES = [{"@id": CATEGORY_SCHEME, "@type": "skos:ConceptScheme", "dct:title": "gridtwin data categories"},
                    {"@id": EU_THEMES, "@type": "skos:ConceptScheme", "dct:title": "Data theme (EU Publications Office)"}]
CATEGORY_TEXTS = {
    DataCategory.ASSET_METADATA: "Assets (buses, external grids, lines, transformers, switches, loads, generators, storages, EV "
                                 "chargers, meters) with their ratings",
    DataCategory.TOPOLOGY: "Buses and the branches between them (lines, transformers, switches)",
    DataCategory.TELEMETRY: "Metered telemetry (power, energy, voltage), aggregated over the provider's groups with groups of fewer "
                            "than k meters suppressed, or per meter where raw data are granted",
    DataCategory.LOADFLOW_RESULTS: "Succeeded load-flow runs and their bus results",
    DataCategory.VIOLATIONS: "Voltage and loading limit violations found by load flows",
    DataCategory.HOSTING_CAPACITY: "PV and load hosting capacity per bus",
}
# Media type (IANA), EU file type (dct:format; none registered for SPARQL results) and label of each representation.
FORMATS = {
    "json": ("application/json", "http://publications.europa.eu/resource/authority/file-type/JSON", "JSON"),
    "json-ld": ("application/ld+json", "http://publications.europa.eu/resource/authority/file-type/JSON_LD", "JSON-LD"),
    "turtle": ("text/turtle", "http://publications.europa.eu/resource/authority/file-type/RDF_TURTLE", "Turtle"),
    "sparql": ("application/sparql-results+json", None, "SPARQL 1.1 query results (JSON)"),
}
REST_FORMATS = ("json", "json-ld", "turtle")
IANA = "http://www.iana.org/assignments/media-types/"
SPARQL_PROTOCOL = "https://www.w3.org/TR/sparql11-protocol/"
RESOLUTION_LABELS = {Resolution.RAW: "raw", Resolution.MIN15: "15 minutes", Resolution.HOUR: "hourly", Resolution.DAY: "daily"}


@dataclass(frozen=True)
class Endpoint:
    """A REST endpoint of the shared views (by URL name) and whether it narrows to one feeder with `?feeder=<IRI>`."""

    name: str
    title: str
    feeder_filter: bool = False


ASSET_ENDPOINTS = {t: Endpoint(f"shared-{t}-list", f"Shared {MODEL_OF_TYPE[t]._meta.verbose_name} list", feeder_filter=True)
                   for t in ASSET_TYPES}
# The endpoint of each shared-view resource of the decision point; the categories it serves are `SHARED[resource]`.
RESOURCE_ENDPOINTS = {
    "shared.topology": [Endpoint("shared-topology", "Shared topology")],
    "shared.telemetry": [Endpoint("shared-telemetry", "Shared telemetry", feeder_filter=True)],
    "shared.run": [Endpoint("shared-run-list", "Shared load-flow runs")],
    "shared.violation": [Endpoint("shared-violations", "Shared violations")],
    "shared.hosting": [Endpoint("shared-hosting-capacity", "Shared hosting capacity")],
}
SPARQL_ENDPOINT = Endpoint("shared-sparql", "Policy-scoped SPARQL endpoint")
ENDPOINT_NAMES = sorted({e.name for e in ASSET_ENDPOINTS.values()} | {e.name for es in RESOURCE_ENDPOINTS.values() for e in es}
                        | {SPARQL_ENDPOINT.name})
USAGE = "Declare ?purpose= (and ?agreement= when several agreements grant it)"
TELEMETRY_USAGE = f"{USAGE}; telemetry also takes quantity, start and end"


@dataclass(frozen=True)
class Links:
    """The absolute URLs the catalog points at, resolved once per request by the API layer.

    `catalog` is the URL of GET /api/v1/shared/catalog (a dataset's IRI is `<catalog>/<dataset id>`), `endpoints` the
    URL of each name of `ENDPOINT_NAMES`, `agreements` the prefix of /api/v1/sharing/agreements/<id>, `schema` the
    OpenAPI description of the endpoints.
    """

    catalog: str
    endpoints: dict[str, str]
    agreements: str
    schema: str

    def dataset(self, key: DatasetKey) -> str:
        """The IRI of a dataset: the URL of GET /api/v1/shared/catalog/<dataset id>."""
        return f"{self.catalog}/{key.id}"


# --- the datasets of one consumer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where a dataset's data lie: a provider's grid, or one feeder of it."""

    provider: twin.Participant
    grid: twin.Grid
    feeder: twin.Feeder | None = None


@dataclass
class CatalogEntry:
    """One dataset of a consumer's catalog and the policies that put it there: agreements in force that grant it
    (`grants`), published offers (`offers`) and agreements offered to the consumer (`awaiting`) that make it requestable."""

    key: DatasetKey
    place: Place
    grants: list[Agreement] = field(default_factory=list)
    offers: list[DatasetOffer] = field(default_factory=list)
    awaiting: list[Agreement] = field(default_factory=list)

    @property
    def granted(self) -> bool:
        return bool(self.grants)

    @property
    def policies(self) -> list[Agreement | DatasetOffer]:
        return [*self.grants, *self.awaiting, *self.offers]

    @property
    def title(self) -> str:
        """`<Category>: <grid> / <feeder>` by the names the provider published; IRIs when every policy drops names."""
        names = any("name" not in (p.dropped_fields or []) for p in self.policies)
        parts = [self.place.grid] + ([self.place.feeder] if self.place.feeder is not None else [])
        label = DataCategory(self.key.category).label
        return f"{label[0].upper()}{label[1:]}: " + " / ".join(part.name if names and part.name else part.iri for part in parts)


def offered_agreements(participant_id: int, at: datetime):
    """Agreements offered to a participant (status `offered`) that are still valid at `at`: offers awaiting its answer."""
    return Agreement.objects.filter(consumer_id=participant_id, status=Agreement.Status.OFFERED,
                                    valid_until__gt=at).select_related("provider")


def _grids(agreements: list[Agreement], only_grid: int | None) -> dict[int, list[twin.Grid]]:
    """Provider id → the provider's grids that some agreement covers (one query: scope_grids of every agreement at once)."""
    whole = {a.provider_id for a in agreements if not a.grid_iris}
    named = {a.provider_id for a in agreements if a.grid_iris} - whole
    iris = {iri for a in agreements if a.provider_id in named for iri in a.grid_iris}
    if not whole and not iris:
        return {}
    rows = twin.Grid.objects.filter(Q(owner_id__in=whole) | Q(owner_id__in=named, iri__in=iris)).only("id", "iri", "name", "owner_id")
    if only_grid is not None:
        rows = rows.filter(pk=only_grid)
    found: dict[int, list[twin.Grid]] = defaultdict(list)
    for grid in rows.order_by("id"):
        found[grid.owner_id].append(grid)
    return found


def _feeders(policies: list, grid_ids: set[int]) -> dict[str, twin.Feeder]:
    """Feeder IRI → feeder, for the feeders the policies list in the grids they cover (one query)."""
    iris = {iri for p in policies for iri in (p.feeder_iris or [])}
    if not iris or not grid_ids:
        return {}
    rows = twin.Feeder.objects.filter(grid_id__in=grid_ids, iri__in=iris).only("id", "iri", "name", "grid_id")
    return {f.iri: f for f in rows}


def _places(provider: twin.Participant, grids: list[twin.Grid], feeder_iris: list[str], feeders: dict[str, twin.Feeder]) -> list[Place]:
    """The places of a policy, as `sharing.datasets` keys them: each listed feeder of the covered grids, or each covered grid."""
    if not feeder_iris:
        return [Place(provider, grid) for grid in grids]
    by_id = {grid.pk: grid for grid in grids}
    listed = [feeders[iri] for iri in dict.fromkeys(feeder_iris) if iri in feeders]
    return [Place(provider, by_id[f.grid_id], f) for f in listed if f.grid_id in by_id]


def _agreement_places(agreement: Agreement, grids: dict[int, list[twin.Grid]], feeders: dict[str, twin.Feeder]) -> list[Place]:
    """An agreement's places: `sharing.scope.scope_grids` (the provider's grids, narrowed to the listed ones) over rows read once."""
    covered = [g for g in grids.get(agreement.provider_id, []) if not agreement.grid_iris or g.iri in agreement.grid_iris]
    return _places(agreement.provider, covered, agreement.feeder_iris, feeders)


def _offer_places(offer: DatasetOffer, feeders: dict[str, twin.Feeder]) -> list[Place]:
    """An offer's places: its listed feeders of its grid, or the grid."""
    if offer.grid.owner_id != offer.provider_id:  # an offer only ever covers its provider's own grid
        return []
    return _places(offer.provider, [offer.grid], offer.feeder_iris, feeders)


def consumer_catalog(participant: twin.Participant, *, at: datetime | None = None, only: DatasetKey | None = None) -> list[CatalogEntry]:
    """The catalog of one consumer participant at `at` (now): its datasets in id order, each with its policies.

    Six queries whatever the number of agreements and offers: agreements in force, offered agreements, the offers shown
    to the participant (two, `sharing.access_requests.visible_offers`), grids, feeders. `only` narrows the grids read to
    one dataset's (the view of one dataset); the result is then that dataset's entry or nothing.
    """
    at = at or timezone.now()
    grants = list(agreements_in_force(participant.pk, at))
    awaiting = list(offered_agreements(participant.pk, at))
    for agreement in (*grants, *awaiting):
        agreement.consumer = participant  # the caller itself: no query for the assignee
    offers = [o for o in visible_offers(participant).order_by("id") if only is None or o.grid_id == only.grid_id]
    grids = _grids([*grants, *awaiting], only.grid_id if only else None)
    grid_ids = {g.pk for gs in grids.values() for g in gs} | {o.grid_id for o in offers}
    feeders = _feeders([*grants, *awaiting, *offers], grid_ids)
    entries: dict[DatasetKey, CatalogEntry] = {}

    def attach(policy, places: list[Place], kind: str) -> None:
        keys = set()
        for place in places:
            for category in (c for c in DataCategory.values if c in policy.categories):
                key = DatasetKey(place.grid.pk, place.feeder.pk if place.feeder else None, category)
                if key in keys or (only is not None and key != only):
                    continue
                keys.add(key)
                getattr(entries.setdefault(key, CatalogEntry(key, place)), kind).append(policy)

    for agreement in grants:
        attach(agreement, _agreement_places(agreement, grids, feeders), "grants")
    for agreement in awaiting:
        attach(agreement, _agreement_places(agreement, grids, feeders), "awaiting")
    for offer in offers:
        attach(offer, _offer_places(offer, feeders), "offers")
    return sorted(entries.values(), key=lambda e: (e.key.grid_id, e.key.feeder_id or 0, e.key.category))


@dataclass(frozen=True)
class CatalogFilter:
    """The server-side filter of the catalog: each set term must hold. It narrows a consumer's own catalog only, so a
    grid or provider the consumer cannot see gives an empty page, as one that does not exist.

    `granted` True: datasets an agreement in force grants; False: datasets no agreement grants (only requestable).
    `text`: case-insensitive part of the title.
    """

    category: str | None = None
    provider: str | None = None
    grid: str | None = None
    feeder: str | None = None
    granted: bool | None = None
    text: str | None = None

    def admits(self, entry: CatalogEntry) -> bool:
        place = entry.place
        return ((self.category is None or entry.key.category == self.category)
                and (self.provider is None or place.provider.iri == self.provider)
                and (self.grid is None or place.grid.iri == self.grid)
                and (self.feeder is None or (place.feeder is not None and place.feeder.iri == self.feeder))
                and (self.granted is None or entry.granted == self.granted)
                and (not self.text or self.text.casefold() in entry.title.casefold()))


# --- JSON-LD -------------------------------------------------------------------------------------------------------


@dataclass
class Rendering:
    """What the datasets of one document share: the links, the data services used so far (URL name → node), and each
    policy's terms, built once per document (a policy grants many datasets)."""

    links: Links
    services: dict[str, dict] = field(default_factory=dict)
    terms: dict[tuple[str, int], tuple[dict, list[dict], list[dict], list[str]]] = field(default_factory=dict)


def _value(term) -> dict | str:
    """An rdflib term as a JSON-LD value: an IRI reference, a typed literal, or a plain string."""
    if isinstance(term, URIRef):
        return {"@id": str(term)}
    if isinstance(term, Literal) and term.datatype is not None:
        return {"@value": str(term), "@type": str(term.datatype)}
    return str(term)


def _constraint(policy_iri: str, name: str, left_operand: str, operator: str, operands: list) -> dict:
    """An odrl:Constraint minted as <policy>/constraint/<name>, the node IRIs of the ODRL export (`sharing.odrl`)."""
    return {"@id": f"{policy_iri}/constraint/{name}", "@type": "odrl:Constraint", "odrl:leftOperand": {"@id": left_operand},
            "odrl:operator": {"@id": operator}, "odrl:rightOperand": [_value(o) for o in operands]}


def _term_constraints(policy, policy_iri: str, fields: tuple[str, ...]) -> list[dict]:
    """The constraints of the profile's form (`sharing.odrl.PERMISSION_CONSTRAINTS`) for the named fields that are set."""
    return [_constraint(policy_iri, t.field, str(t.left_operand), str(t.operator), operands)
            for t in PERMISSION_CONSTRAINTS if t.field in fields and (operands := t.write(getattr(policy, t.field)))]


AGREEMENT_FIELDS = tuple(t.field for t in PERMISSION_CONSTRAINTS)
OFFER_FIELDS = ("resolution", "min_group_size", "group_by", "dropped_fields")


def _offer_constraints(offer: DatasetOffer) -> list[dict]:
    """An offer's terms: purposes one may ask for, finest resolution, groups and k, dropped fields, longest period."""
    purposes = [URIRef(PURPOSE_IRIS[p]) for p in offer.purposes if p in PURPOSE_IRIS]
    period = [Literal(f"P{offer.max_days}D", datatype=URIRef(XSD + "duration"))]
    return [_constraint(offer.uid, "purposes", ODRL + "purpose", ODRL + "isAnyOf", purposes),
            *_term_constraints(offer, offer.uid, OFFER_FIELDS),
            _constraint(offer.uid, "max_days", ODRL + "elapsedTime", ODRL + "lteq", period)]


def _duties(policy, policy_iri: str) -> list[dict]:
    """The attribution and deletion duties of a policy, in the form of the ODRL export."""
    duties = []
    if policy.attribution:
        duties.append({"@id": f"{policy_iri}/duty/attribution", "@type": "odrl:Duty", "odrl:action": {"@id": ODRL + "attribute"},
                       "gt:attributionText": policy.attribution})
    if policy.delete_after_days is not None:
        retention = [Literal(f"P{policy.delete_after_days}D", datatype=URIRef(XSD + "duration"))]
        duties.append({"@id": f"{policy_iri}/duty/delete_after_days", "@type": "odrl:Duty", "odrl:action": {"@id": ODRL + "delete"},
                       "odrl:constraint": [_constraint(policy_iri, "delete_after_days", ODRL + "elapsedTime", ODRL + "lteq", retention)]})
    return duties


def _on_target(terms: tuple[dict, list[dict], list[dict], list[str]], target: str) -> dict:
    """A policy node whose permission (with its constraints and duties) and prohibitions target one dataset."""
    node, constraints, duties, prohibited = terms
    permission = {"@type": "odrl:Permission", "odrl:action": {"@id": ODRL + "read"}, "odrl:target": {"@id": target},
                  "odrl:constraint": constraints, **({"odrl:duty": duties} if duties else {})}
    prohibitions = [{"@type": "odrl:Prohibition", "odrl:action": {"@id": action}, "odrl:target": {"@id": target}} for action in prohibited]
    return {**node, "odrl:permission": [permission], **({"odrl:prohibition": prohibitions} if prohibitions else {})}


def _prohibited(policy) -> list[str]:
    """The IRIs of the actions a policy prohibits (odrl:distribute, odrl:sell, gt:reidentify)."""
    return [str(PROHIBITED_ACTIONS[p]) for p in policy.prohibitions or [] if p in PROHIBITED_ACTIONS]


def _agreement_terms(agreement: Agreement, links: Links, awaiting: bool) -> tuple[dict, list[dict], list[dict], list[str]]:
    """An agreement as a policy: in force (`odrl:Agreement`, with what to pass to read it) or offered to the consumer
    (`odrl:Offer`, awaiting its answer at the agreement's URL); its terms in the profile's constraint form."""
    node = {"@id": agreement.uid, "@type": "odrl:Offer" if awaiting else "odrl:Agreement", "odrl:uid": {"@id": agreement.uid},
            "odrl:profile": {"@id": PROFILE}, "odrl:assigner": {"@id": agreement.provider.iri},
            "odrl:assignee": {"@id": agreement.consumer.iri}, "gt:status": agreement.status,
            "gt:agreementId": agreement.pk, "rdfs:seeAlso": {"@id": f"{links.agreements}{agreement.pk}"}}
    if awaiting:
        node["gt:awaitingAnswer"] = True
    else:
        node["gt:readWith"] = f"agreement={agreement.pk}&purpose={agreement.purpose}"
    constraints = _term_constraints(agreement, agreement.uid, AGREEMENT_FIELDS)
    return node, constraints, _duties(agreement, agreement.uid), _prohibited(agreement)


def _offer_terms(offer: DatasetOffer) -> tuple[dict, list[dict], list[dict], list[str]]:
    """A published offer as a policy (`odrl:Offer` of the provider): the terms a request gets."""
    node = {"@id": offer.uid, "@type": "odrl:Offer", "odrl:uid": {"@id": offer.uid}, "odrl:profile": {"@id": PROFILE},
            "odrl:assigner": {"@id": offer.provider.iri}, "dct:title": offer.title, "gt:offerId": offer.pk}
    if offer.description:
        node["dct:description"] = offer.description
    return node, _offer_constraints(offer), _duties(offer, offer.uid), _prohibited(offer)


def _policies(entry: CatalogEntry, target: str, rendering: Rendering) -> list[dict]:
    """The dataset's policies: the agreements granting it, those awaiting the consumer's answer, the offers."""
    found = []
    for kind, policies in (("grant", entry.grants), ("awaiting", entry.awaiting), ("offer", entry.offers)):
        for policy in policies:
            cache_key = (kind, policy.pk)
            if cache_key not in rendering.terms:
                rendering.terms[cache_key] = _offer_terms(policy) if kind == "offer" else \
                    _agreement_terms(policy, rendering.links, awaiting=kind == "awaiting")
            found.append(_on_target(rendering.terms[cache_key], target))
    return found


def _service(endpoint: Endpoint, links: Links) -> dict:
    """The data service behind an endpoint (DCAT-AP: title and endpoint URL; described by the API's OpenAPI schema)."""
    url = links.endpoints[endpoint.name]
    node = {"@id": url, "@type": "dcat:DataService", "dct:title": endpoint.title, "dcat:endpointURL": {"@id": url},
            "dcat:endpointDescription": {"@id": links.schema}}
    if endpoint is SPARQL_ENDPOINT:
        node["dct:conformsTo"] = {"@id": SPARQL_PROTOCOL, "@type": "dct:Standard"}
    return node


def _endpoints(entry: CatalogEntry) -> list[Endpoint]:
    """The REST endpoints serving the dataset's category; for asset metadata the asset lists the policies' types allow."""
    category = entry.key.category
    if category == DataCategory.ASSET_METADATA:
        types = set() if any(not getattr(p, "asset_types", None) for p in entry.policies) else \
            {t for p in entry.policies for t in p.asset_types}
        return [e for t, e in ASSET_ENDPOINTS.items() if not types or t in types]
    return [e for resource, es in RESOURCE_ENDPOINTS.items() if category in SHARED[resource] for e in es]


def _resolutions(entry: CatalogEntry) -> list[str | None]:
    """Telemetry: every resolution at or coarser than the finest one a policy of the dataset allows; otherwise [None]."""
    if entry.key.category != DataCategory.TELEMETRY:
        return [None]
    finest = min((RESOLUTION_ORDER.index(p.resolution) for p in entry.policies if p.resolution in RESOLUTION_ORDER),
                 default=RESOLUTION_ORDER.index(Resolution.DAY))
    return list(RESOLUTION_ORDER[finest:])


def _distribution(entry: CatalogEntry, dataset_iri: str, endpoints: list[Endpoint], format_name: str, resolution: str | None,
                  rendering: Rendering) -> dict:
    """One representation (format, and resolution for telemetry) of the dataset, at the endpoints that serve it."""
    media_type, file_type, format_label = FORMATS[format_name]
    links = rendering.links
    urls = [_access_url(e, entry.place, resolution, links) for e in endpoints]
    for e in endpoints:
        if e.name not in rendering.services:
            rendering.services[e.name] = _service(e, links)
    label = DataCategory(entry.key.category).label
    node = {"@id": f"{dataset_iri}#{format_name}{'-' + resolution if resolution else ''}", "@type": "dcat:Distribution",
            "dct:title": f"{label[0].upper()}{label[1:]}{', ' + RESOLUTION_LABELS[resolution] if resolution else ''}, as {format_label}",
            "dct:description": TELEMETRY_USAGE if resolution else USAGE,
            "dcat:accessURL": [{"@id": url} for url in urls], "dcat:accessService": [{"@id": links.endpoints[e.name]} for e in endpoints],
            "dcat:mediaType": {"@id": IANA + media_type, "@type": "dct:MediaType"}}
    if file_type:
        node["dct:format"] = {"@id": file_type, "@type": "dct:MediaTypeOrExtent"}
    if resolution is not None:
        node["gt:resolution"] = resolution
        if resolution != Resolution.RAW:
            node["dcat:temporalResolution"] = {"@value": RESOLUTION_DURATIONS[resolution], "@type": "xsd:duration"}
    return node


def _access_url(endpoint: Endpoint, place: Place, resolution: str | None, links: Links) -> str:
    """The endpoint's URL narrowed to the dataset: its feeder (where the endpoint filters by feeder) and resolution."""
    query = [("feeder", place.feeder.iri)] if endpoint.feeder_filter and place.feeder is not None else []
    if resolution is not None:
        query.append(("resolution", resolution))
    return links.endpoints[endpoint.name] + (f"?{urlencode(query)}" if query else "")


def _temporal(entry: CatalogEntry) -> list[dict]:
    """The data windows of the granting agreements, as periods of time (the end is exclusive, as in the agreement)."""
    periods = []
    for window in dict.fromkeys((a.data_start, a.data_end) for a in entry.grants if a.data_start or a.data_end):
        period = {"@type": "dct:PeriodOfTime"}
        for term, at in zip(("dcat:startDate", "dcat:endDate"), window, strict=True):
            if at is not None:
                period[term] = {"@value": at.astimezone(UTC).isoformat(), "@type": "xsd:dateTime"}
        periods.append(period)
    return periods


def dataset_node(entry: CatalogEntry, rendering: Rendering) -> dict:
    """One dataset as a `dcat:Dataset` node: identity, place, themes, distributions, and its policies.

    The data services its distributions use are added to `rendering.services` for the caller to place."""
    key, place = entry.key, entry.place
    iri = rendering.links.dataset(key)
    where = f"feeder {place.feeder.iri} of grid {place.grid.iri}" if place.feeder else f"grid {place.grid.iri}"
    node = {"@id": iri, "@type": "dcat:Dataset", "dct:identifier": key.id, "dct:title": entry.title,
            "dct:description": f"{CATEGORY_TEXTS[key.category]}: {where}, published by {place.provider.name}.",
            "dct:publisher": {"@id": place.provider.iri, "@type": "foaf:Agent", "foaf:name": place.provider.name},
            "dcat:theme": [{"@id": f"{CATEGORY_SCHEME}/{key.category}", "@type": "skos:Concept",
                            "skos:prefLabel": DataCategory(key.category).label, "skos:inScheme": {"@id": CATEGORY_SCHEME}}, ENERGY_THEME],
            "gt:dataCategory": key.category, "gt:grid": {"@id": place.grid.iri}, "gt:granted": entry.granted}
    if place.feeder is not None:
        node["gt:feeder"] = {"@id": place.feeder.iri}
    temporal = _temporal(entry)
    if temporal:
        node["dct:temporal"] = temporal
    endpoints = _endpoints(entry)
    node["dcat:distribution"] = [_distribution(entry, iri, endpoints, f, r, rendering) for r in _resolutions(entry) for f in REST_FORMATS]
    if key.category in SHARED["shared.sparql"]:
        node["dcat:distribution"].append(_distribution(entry, iri, [SPARQL_ENDPOINT], "sparql", None, rendering))
    node["odrl:hasPolicy"] = _policies(entry, iri, rendering)
    return node


def hub_agent() -> dict:
    """The hub itself, publisher of every consumer's catalog."""
    return {"@id": f"{settings.GRIDTWIN_BASE_IRI}hub", "@type": "foaf:Agent", "foaf:name": "gridtwin data-sharing hub"}


def catalog_document(entries: list[CatalogEntry], *, consumer: twin.Participant, links: Links, page: dict) -> dict:
    """A page of a consumer's catalog as a `dcat:Catalog` (JSON-LD, inline context); `page` holds count, limit, offset,
    next and previous. The data services of the page's distributions are the catalog's `dcat:service`."""
    rendering = Rendering(links)
    datasets = [dataset_node(entry, rendering) for entry in entries]
    services = rendering.services
    return {"@context": CONTEXT, "@id": links.catalog, "@type": "dcat:Catalog", "dct:title": f"Datasets for {consumer.name}",
            "dct:description": f"The datasets the agreements in force of {consumer.name} grant, and those it may request from "
                               "published offers, on this hub (DCAT 3; policies in ODRL 2.2).",
            "dct:publisher": hub_agent(), "dcat:themeTaxonomy": THEME_TAXONOMIES,
            "dcat:service": [services[name] for name in sorted(services)], "dcat:dataset": datasets, **page}


def dataset_document(entry: CatalogEntry, *, links: Links) -> dict:
    """One dataset of a consumer's catalog as a JSON-LD document, its data services embedded in its distributions."""
    rendering = Rendering(links)
    node = dataset_node(entry, rendering)
    by_url = {s["@id"]: s for s in rendering.services.values()}
    for distribution in node["dcat:distribution"]:
        distribution["dcat:accessService"] = [by_url[s["@id"]] for s in distribution["dcat:accessService"]]
    return {"@context": CONTEXT, **node}


def as_turtle(document: dict) -> bytes:
    """A catalog document as Turtle: the same graph, parsed from its JSON-LD with the inline context only (pyoxigraph),
    triples sorted so each node's statements stay together."""
    quads = ox.parse(orjson.dumps(document), format=ox.RdfFormat.JSON_LD)
    triples = sorted((q.triple for q in quads), key=lambda t: (str(t.subject), str(t.predicate), str(t.object)))
    return ox.serialize(triples, format=ox.RdfFormat.TURTLE, prefixes=PREFIXES)

