"""Agreements as ODRL 2.2 policies: the one mapping between `Agreement` rows and their RDF form.

An agreement <A> (its `uid`) is an `odrl:Agreement` of the gridtwin profile
(`ontology/vocabulary/gridtwin-odrl-profile.ttl`); the nodes below it are minted as <A/...> so that a
shape violation names the part at fault (`<A>/constraint/min_group_size`, ...). The form:

==================  =========================================================================================
field               RDF
==================  =========================================================================================
uid                 ``<A> a odrl:Agreement ; odrl:uid <A> ; odrl:profile <https://w3id.org/gridtwin/odrl-profile>``
provider, consumer  ``odrl:assigner``, ``odrl:assignee`` (participant IRIs)
status, version     ``gt:status "active"``, ``dcat:version 2``
previous            ``dcterms:replaces <uid of the previous version>``
grid_iris ...       the scope ``<A/target> a odrl:AssetCollection`` with ``gt:grid``, ``gt:feeder``, ``gt:asset`` (IRIs)
                    and ``gt:assetType`` (literals); nothing listed: everything of the provider
categories          per category c: ``<A/permission/c>`` with ``odrl:action odrl:read`` and ``odrl:target <A/target/c>``,
                    ``<A/target/c> a odrl:AssetCollection ; odrl:partOf <A/target> ; gt:dataCategory "c"``
purpose             constraint ``odrl:purpose odrl:eq <purpose IRI>`` (DPV, or a gt: grid purpose)
valid_from, _until  ``odrl:dateTime odrl:gteq`` / ``odrl:lt`` an xsd:dateTime (UTC)
data_start, _end    ``gt:dataTime odrl:gteq`` / ``odrl:lt`` an xsd:dateTime (only when set)
resolution          ``gt:temporalResolution odrl:gteq`` an xsd:duration: PT0S (raw), PT15M, PT1H, P1D
min_group_size      ``gt:aggregationCount odrl:gteq`` k (xsd:integer)
group_by            ``gt:aggregationGroup odrl:eq "feeder"`` (or "grid", "transformer")
dropped_fields      ``gt:field odrl:isNoneOf "owner", "name" ...``: the fields withheld (only when any are)
attribution         duty ``<A/duty/attribution>``: ``odrl:action odrl:attribute ; gt:attributionText "..."``
delete_after_days   duty ``<A/duty/delete_after_days>``: ``odrl:action odrl:delete`` constrained by
                    ``odrl:elapsedTime odrl:lteq "P{N}D"^^xsd:duration``
prohibitions        ``<A/prohibition/p>`` with ``odrl:action`` odrl:distribute / odrl:sell / gt:reidentify, target ``<A/target>``
==================  =========================================================================================

Constraints and duties hold for the agreement as a whole, so every permission carries the same ones.
Withheld fields are a constraint, not a duty: the permission covers the records minus those fields (the
hub removes them; nothing is asked of the consumer). Lists come back in the order of their choices (IRIs
sorted), without duplicates; export → import → export gives an isomorphic graph.

Every graph read is first judged by the profile's shapes (`ontology.odrl_shapes`), which refuse any node
or term the form above does not have. Reading then refuses, with an `OdrlError` naming the node, what
SHACL core cannot state: a graph of more or less than one agreement, two constraints for one field, two
permissions for one category, permissions that differ in constraints or duties, a prohibition on
another target, triples about anything else (participants, grids ...), and unknown participants or
previous versions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import pyoxigraph as ox
from django.utils import timezone
from rdflib import Graph, Literal, URIRef
from rdflib.namespace import DCAT, DCTERMS, RDF, XSD

from ontology.errors import OntologyError
from ontology.namespaces import GT
from ontology.odrl_shapes import DPV, ODRL, PROFILE, node_key, validate_policy
from ontology.parsing import parse_rdf
from ontology.serialization import ox_triples
from ontology.validation import Violation
from sharing.models import ASSET_TYPES, DROPPABLE_FIELDS, PROHIBITIONS, PURPOSE_IRIS, Agreement, DataCategory, Resolution
from twin.models import Participant

# An agreement is a few kilobytes and a few hundred triples; a body larger than this is not one (the profile's shapes run in
# pyshacl: a 1 MB list of 100,000 triples took 3.9 s and 211 MB to refuse before this bound).
POLICY_MAX_BYTES = 1024 * 1024
POLICY_MAX_LITERAL_CHARS = 4096
POLICY_MAX_TRIPLES = 2000
PREFIXES = {"odrl": ODRL, "gt": GT, "dpv": DPV, "dcat": DCAT, "dcterms": DCTERMS, "xsd": XSD}
# The inline JSON-LD context (never a remote one): ODRL is the vocabulary, as in the ODRL context.
JSON_LD_CONTEXT = {
    "@vocab": str(ODRL),
    **{prefix: str(namespace) for prefix, namespace in PREFIXES.items()},
    **{term: {"@type": "@id"} for term in ("uid", "profile", "assigner", "assignee", "permission", "prohibition", "duty", "constraint",
                                          "target", "partOf")},
    **{term: {"@type": "@vocab"} for term in ("action", "leftOperand", "operator")},
    **{term: {"@id": f"gt:{term}", "@type": "@id"} for term in ("grid", "feeder", "asset")},
    **{term: f"gt:{term}" for term in ("assetType", "dataCategory", "attributionText", "status")},
    "version": "dcat:version",
    "replaces": {"@id": "dcterms:replaces", "@type": "@id"},
}
REFERENCE_TERMS = {term for term, definition in JSON_LD_CONTEXT.items() if isinstance(definition, dict) and definition["@type"] == "@id"}

SCOPE_IRIS = {"grid_iris": GT.grid, "feeder_iris": GT.feeder, "asset_iris": GT.asset}
PROHIBITED_ACTIONS = {"distribute": ODRL.distribute, "sell": ODRL.sell, "reidentify": GT.reidentify}
RESOLUTION_DURATIONS = {Resolution.RAW: "PT0S", Resolution.MIN15: "PT15M", Resolution.HOUR: "PT1H", Resolution.DAY: "P1D"}
PURPOSES_BY_IRI = {URIRef(iri): purpose for purpose, iri in PURPOSE_IRIS.items()}
RESOLUTIONS_BY_DURATION = {Literal(duration, datatype=XSD.duration).toPython(): r for r, duration in RESOLUTION_DURATIONS.items()}
DAYS = re.compile(r"^P([0-9]+)D$")
VERSION = URIRef(f"{DCAT}version")  # DCAT 3; rdflib's DCAT namespace is DCAT 2


class OdrlError(OntologyError):
    """An agreement that is not a policy of the gridtwin ODRL profile (HTTP 422).

    `reason`: odrl_violation (the shapes refused it; `violations` lists every result), invalid_iri, no_agreement,
    several_agreements, duplicate_category, duplicate_constraint, permissions_differ, prohibition_target,
    not_part_of_agreement, unknown_participant, unknown_agreement. `node` names the node at fault.
    """

    status = 422

    def __init__(self, reason: str, message: str, node: str | None = None, violations: list[Violation] | None = None):
        super().__init__(message, node=node)
        self.reason = reason
        self.violations = violations or []

    def as_dict(self) -> dict:
        detail = super().as_dict()
        if self.violations:
            detail["violations"] = [v.as_dict() for v in self.violations]
        return detail


# --- constraints: each field's left operand, operator and right operands, both ways ---------------


def _datetimes(value: datetime | None) -> list[Literal]:
    """A time as an xsd:dateTime in UTC (a naive one is read in the default timezone, as Django does)."""
    if value is None:
        return []
    aware = timezone.make_aware(value) if timezone.is_naive(value) else value
    return [Literal(aware.astimezone(UTC).isoformat(), datatype=XSD.dateTime)]


def _datetime(operands: list) -> datetime:
    """The time an xsd:dateTime right operand states, in UTC."""
    return operands[0].toPython().astimezone(UTC)


@dataclass(frozen=True)
class ConstraintTerm:
    """How one agreement field is written as a permission constraint; no right operands means no constraint."""

    field: str
    left_operand: URIRef
    operator: URIRef
    write: Callable[[object], list]
    read: Callable[[list], object]
    default: object = None


PERMISSION_CONSTRAINTS = (
    ConstraintTerm("purpose", ODRL.purpose, ODRL.eq, lambda v: [URIRef(PURPOSE_IRIS[v])] if v in PURPOSE_IRIS else [Literal(str(v))],
                   lambda operands: PURPOSES_BY_IRI[operands[0]]),
    ConstraintTerm("valid_from", ODRL.dateTime, ODRL.gteq, _datetimes, _datetime),
    ConstraintTerm("valid_until", ODRL.dateTime, ODRL.lt, _datetimes, _datetime),
    ConstraintTerm("data_start", GT.dataTime, ODRL.gteq, _datetimes, _datetime),
    ConstraintTerm("data_end", GT.dataTime, ODRL.lt, _datetimes, _datetime),
    ConstraintTerm("resolution", GT.temporalResolution, ODRL.gteq,
                   lambda v: [Literal(RESOLUTION_DURATIONS.get(v, v), datatype=XSD.duration)],
                   lambda operands: RESOLUTIONS_BY_DURATION[operands[0].toPython()]),
    ConstraintTerm("min_group_size", GT.aggregationCount, ODRL.gteq, lambda v: [Literal(v, datatype=XSD.integer)],
                   lambda operands: int(operands[0])),
    ConstraintTerm("group_by", GT.aggregationGroup, ODRL.eq, lambda v: [Literal(v)], lambda operands: str(operands[0])),
    ConstraintTerm("dropped_fields", GT.field, ODRL.isNoneOf, lambda v: [Literal(f) for f in v],
                   lambda operands: [f for f in DROPPABLE_FIELDS if Literal(f) in operands], default=[]),
)
CONSTRAINTS_BY_OPERANDS = {(term.left_operand, term.operator): term for term in PERMISSION_CONSTRAINTS}


# --- writing -------------------------------------------------------------------------------------


def _iri(value, what: str, policy: str | None = None) -> URIRef:
    """`value` as an IRI node; refuses what no RDF parser would read back (a clean error instead of a broken export)."""
    try:
        ox.NamedNode(value)
    except (TypeError, ValueError) as exc:
        raise OdrlError("invalid_iri", f"{what} {value!r} is not an absolute IRI ({exc})", node=policy) from exc
    return URIRef(value)


def _mint(policy: URIRef, *steps: str) -> URIRef:
    """The IRI of a part of the policy, e.g. <A/constraint/purpose>."""
    return URIRef("/".join([str(policy), *(quote(str(step), safe="") for step in steps)]))


def _add_constraint(graph: Graph, node: URIRef, left_operand: URIRef, operator: URIRef, operands: list) -> URIRef:
    """Add an odrl:Constraint `node` stating `left_operand operator operands`."""
    graph.add((node, RDF.type, ODRL.Constraint))
    graph.add((node, ODRL.leftOperand, left_operand))
    graph.add((node, ODRL.operator, operator))
    for operand in operands:
        graph.add((node, ODRL.rightOperand, operand))
    return node


def agreement_to_graph(agreement: Agreement) -> Graph:
    """The agreement as an ODRL 2.2 policy of the gridtwin profile (the form in the module docstring)."""
    policy = _iri(agreement.uid, "the uid")
    where = str(policy)
    graph = Graph()
    for prefix, namespace in PREFIXES.items():
        graph.bind(prefix, namespace)
    graph.add((policy, RDF.type, ODRL.Agreement))
    graph.add((policy, ODRL.uid, policy))
    graph.add((policy, ODRL.profile, PROFILE))
    for predicate, party in ((ODRL.assigner, getattr(agreement, "provider", None)), (ODRL.assignee, getattr(agreement, "consumer", None))):
        if party is not None:
            graph.add((policy, predicate, _iri(party.iri, "the participant IRI", where)))
    graph.add((policy, GT.status, Literal(agreement.status)))
    graph.add((policy, VERSION, Literal(agreement.version, datatype=XSD.integer)))
    if agreement.previous is not None:
        graph.add((policy, DCTERMS.replaces, _iri(agreement.previous.uid, "the previous agreement's uid", where)))

    scope = _mint(policy, "target")
    graph.add((scope, RDF.type, ODRL.AssetCollection))
    for field, predicate in SCOPE_IRIS.items():
        for iri in getattr(agreement, field):
            graph.add((scope, predicate, _iri(iri, field, where)))
    for asset_type in agreement.asset_types:
        graph.add((scope, GT.assetType, Literal(asset_type)))

    conditions = [_add_constraint(graph, _mint(policy, "constraint", term.field), term.left_operand, term.operator, operands)
                  for term in PERMISSION_CONSTRAINTS if (operands := term.write(getattr(agreement, term.field)))]
    duties = _add_duties(graph, policy, agreement)
    for category in agreement.categories:
        permission, target = _mint(policy, "permission", category), _mint(policy, "target", category)
        graph.add((policy, ODRL.permission, permission))
        graph.add((permission, RDF.type, ODRL.Permission))
        graph.add((permission, ODRL.action, ODRL.read))
        graph.add((permission, ODRL.target, target))
        graph.add((target, RDF.type, ODRL.AssetCollection))
        graph.add((target, ODRL.partOf, scope))
        graph.add((target, GT.dataCategory, Literal(category)))
        for node in conditions:
            graph.add((permission, ODRL.constraint, node))
        for node in duties:
            graph.add((permission, ODRL.duty, node))
    for name in agreement.prohibitions:
        prohibition = _mint(policy, "prohibition", name)
        graph.add((policy, ODRL.prohibition, prohibition))
        graph.add((prohibition, RDF.type, ODRL.Prohibition))
        graph.add((prohibition, ODRL.action, PROHIBITED_ACTIONS.get(name, Literal(name))))
        graph.add((prohibition, ODRL.target, scope))
    return graph


def _add_duties(graph: Graph, policy: URIRef, agreement: Agreement) -> list[URIRef]:
    """The attribution and deletion duties every permission carries."""
    duties = []
    if agreement.attribution:
        duty = _mint(policy, "duty", "attribution")
        graph.add((duty, RDF.type, ODRL.Duty))
        graph.add((duty, ODRL.action, ODRL.attribute))
        graph.add((duty, GT.attributionText, Literal(agreement.attribution)))
        duties.append(duty)
    if agreement.delete_after_days is not None:
        duty = _mint(policy, "duty", "delete_after_days")
        graph.add((duty, RDF.type, ODRL.Duty))
        graph.add((duty, ODRL.action, ODRL.delete))
        retention = Literal(f"P{agreement.delete_after_days}D", datatype=XSD.duration)
        graph.add((duty, ODRL.constraint, _add_constraint(graph, _mint(policy, "constraint", "delete_after_days"), ODRL.elapsedTime,
                                                          ODRL.lteq, [retention])))
        duties.append(duty)
    return duties


# --- checking and reading ------------------------------------------------------------------------


def _refuse_violations(graph: Graph) -> None:
    """Raise `OdrlError` (reason odrl_violation, with every violation) unless the graph conforms to the profile's shapes."""
    violations = validate_policy(graph)
    if violations:
        raise OdrlError("odrl_violation", f"the agreement does not conform to the gridtwin ODRL profile: {len(violations)} violation(s)",
                        node=violations[0].focus_node, violations=violations)


def agreement_check(agreement: Agreement) -> None:
    """Refuse an agreement whose policy the profile's shapes do not accept: call on every write (admin save, API create)."""
    _refuse_violations(agreement_to_graph(agreement))


def graph_to_agreement_fields(graph: Graph) -> dict:
    """The Agreement field values of a policy graph (uid, version, status, previous, provider, consumer and the TERMS).

    The graph must hold exactly one agreement of the gridtwin profile and nothing else; participants and the
    previous version are looked up by IRI and must exist. Raises `OdrlError` naming the node at fault.
    """
    _refuse_violations(graph)
    agreements = sorted(graph.subjects(RDF.type, ODRL.Agreement))
    if len(agreements) != 1:
        raise OdrlError("no_agreement" if not agreements else "several_agreements",
                        f"the graph must hold exactly one odrl:Agreement; it holds {len(agreements)}",
                        node=node_key(agreements[1]) if agreements else None)
    policy = agreements[0]
    read = {policy}
    fields: dict = {"uid": str(policy), "version": int(graph.value(policy, VERSION)), "status": str(graph.value(policy, GT.status))}

    permissions = sorted(graph.objects(policy, ODRL.permission))
    categories, terms = set(), None
    for permission in permissions:
        target = graph.value(permission, ODRL.target)
        category = str(graph.value(target, GT.dataCategory))
        if category in categories:
            raise OdrlError("duplicate_category", f"two permissions cover the data category {category}", node=node_key(permission))
        categories.add(category)
        permission_terms = _rule_terms(graph, permission, read)
        if terms is not None and permission_terms != terms:
            raise OdrlError("permissions_differ", "every permission of an agreement must carry the same constraints and duties",
                            node=node_key(permission))
        terms = permission_terms
        read |= {permission, target}
    fields["categories"] = [c for c in DataCategory.values if c in categories]
    fields.update(terms)

    scope = graph.value(graph.value(permissions[0], ODRL.target), ODRL.partOf)
    read.add(scope)
    for field, predicate in SCOPE_IRIS.items():
        fields[field] = sorted(str(iri) for iri in graph.objects(scope, predicate))
    asset_types = {str(t) for t in graph.objects(scope, GT.assetType)}
    fields["asset_types"] = [t for t in ASSET_TYPES if t in asset_types]
    prohibitions = sorted(graph.objects(policy, ODRL.prohibition))
    for prohibition in prohibitions:
        if graph.value(prohibition, ODRL.target) != scope:
            raise OdrlError("prohibition_target", "a prohibition must target the agreement's scope", node=node_key(prohibition))
    actions = {graph.value(p, ODRL.action) for p in prohibitions}
    fields["prohibitions"] = [name for name in PROHIBITIONS if PROHIBITED_ACTIONS[name] in actions]
    read.update(prohibitions)

    stray = sorted(set(graph.subjects()) - read)
    if stray:
        raise OdrlError("not_part_of_agreement", f"{len(stray)} node(s) of the graph are not part of the agreement",
                        node=node_key(stray[0]))
    fields.update(_parties(graph, policy))
    fields["previous"] = _previous(graph.value(policy, DCTERMS.replaces))
    return fields


def _rule_terms(graph: Graph, permission, read: set) -> dict:
    """The field values a permission's constraints and duties state; adds the nodes read to `read`."""
    terms = {term.field: term.default for term in PERMISSION_CONSTRAINTS}
    stated = set()
    for constraint in sorted(graph.objects(permission, ODRL.constraint)):
        term = CONSTRAINTS_BY_OPERANDS[(graph.value(constraint, ODRL.leftOperand), graph.value(constraint, ODRL.operator))]
        if term.field in stated:
            raise OdrlError("duplicate_constraint", f"two constraints of one permission state {term.field}", node=node_key(constraint))
        stated.add(term.field)
        terms[term.field] = term.read(list(graph.objects(constraint, ODRL.rightOperand)))
        read.add(constraint)
    terms["attribution"], terms["delete_after_days"] = "", None
    for duty in graph.objects(permission, ODRL.duty):
        if graph.value(duty, ODRL.action) == ODRL.attribute:
            terms["attribution"] = str(graph.value(duty, GT.attributionText))
        else:
            retention = graph.value(duty, ODRL.constraint)
            terms["delete_after_days"] = int(DAYS.match(str(graph.value(retention, ODRL.rightOperand))).group(1))
            read.add(retention)
        read.add(duty)
    return terms


def _parties(graph: Graph, policy) -> dict:
    """The provider and consumer: the participants the assigner and assignee IRIs name."""
    iris = {"provider": str(graph.value(policy, ODRL.assigner)), "consumer": str(graph.value(policy, ODRL.assignee))}
    participants = {p.iri: p for p in Participant.objects.filter(iri__in=iris.values())}
    for role, iri in iris.items():
        if iri not in participants:
            raise OdrlError("unknown_participant", f"the {role} {iri} is not a participant of this hub", node=iri)
    return {role: participants[iri] for role, iri in iris.items()}


def _previous(replaces) -> Agreement | None:
    """The agreement a new version replaces (dcterms:replaces), which must exist."""
    if replaces is None:
        return None
    previous = Agreement.objects.filter(uid=str(replaces)).first()
    if previous is None:
        raise OdrlError("unknown_agreement", f"dcterms:replaces names {replaces}, which is not an agreement of this hub",
                        node=str(replaces))
    return previous


def agreement_from_graph(graph: Graph) -> Agreement:
    """An unsaved Agreement of a policy graph (see `graph_to_agreement_fields`)."""
    return Agreement(**graph_to_agreement_fields(graph))


# --- bytes ---------------------------------------------------------------------------------------


def serialize_agreement(agreement: Agreement, format_name: str) -> bytes:
    """The agreement's policy as "turtle" or "json-ld" (compact, with the inline context, nested from the agreement down)."""
    graph = agreement_to_graph(agreement)
    if format_name == "turtle":
        triples = sorted(ox_triples(graph), key=lambda t: (str(t.subject), str(t.predicate), str(t.object)))
        return ox.serialize(triples, format=ox.RdfFormat.TURTLE, prefixes={prefix: str(ns) for prefix, ns in PREFIXES.items()})
    if format_name == "json-ld":
        return json.dumps(_json_ld_tree(graph), indent=2, ensure_ascii=False).encode()
    raise ValueError(f"unknown agreement format {format_name!r}; use turtle or json-ld")


def _json_ld_tree(graph: Graph) -> dict:
    """Compact JSON-LD of the policy with every node embedded where it is first referenced (depth-first from the agreement)."""
    document = json.loads(graph.serialize(format="json-ld", context=JSON_LD_CONTEXT, auto_compact=True))
    document.pop("@context")
    nodes = {node["@id"]: node for node in document.get("@graph", [document])}
    root = next(node for node in nodes.values() if node.get("@type") == "Agreement")
    embedded = {root["@id"]}

    def embed(term: str, value):
        if isinstance(value, list):
            return [embed(term, v) for v in sorted(value, key=lambda v: json.dumps(v, sort_keys=True))]
        reference = value if term in REFERENCE_TERMS and isinstance(value, str) else None
        if reference in nodes and reference not in embedded:
            embedded.add(reference)
            return {key: embed(key, v) for key, v in nodes[reference].items()}
        return value

    tree = {key: embed(key, value) for key, value in root.items()}
    rest = [node for node_id, node in sorted(nodes.items()) if node_id not in embedded]
    return {"@context": JSON_LD_CONTEXT, **({"@graph": [tree, *rest]} if rest else tree)}


def parse_agreement(data: bytes, content_type: str | None) -> Graph:
    """The policy graph of an uploaded agreement (Turtle, JSON-LD with an inline context, RDF/XML, N-Triples), for
    `graph_to_agreement_fields`. Parsed by the safe parser: no DOCTYPE, no remote @context, bounded size, triples and literals."""
    document = parse_rdf(data, content_type, max_bytes=POLICY_MAX_BYTES, max_literal_chars=POLICY_MAX_LITERAL_CHARS,
                         max_triples=POLICY_MAX_TRIPLES)
    graph = Graph()
    for subject, predicate, obj in document.to_graph():
        # RDF 1.1: "x" and "x"^^xsd:string are one literal; rdflib (and so pyshacl's sh:in) only equates the plain form
        plain = isinstance(obj, Literal) and obj.datatype == XSD.string
        graph.add((subject, predicate, Literal(str(obj)) if plain else obj))
    return graph
