"""Rows of the third-party views as plain dicts, redacted once, then rendered as JSON, JSON-LD or Turtle.

Every format is rendered from the same redacted rows, so a field an agreement drops is absent from all of
them. References to other twin rows are IRIs, never internal ids.
"""

from __future__ import annotations

import orjson
from django.db.models import QuerySet
from rdflib import Graph

from sharing.scope import TYPE_OF_MODEL

GT = "https://w3id.org/gridtwin/ontology#"
SKIPPED_FIELDS = {"id", "part_iris", "grid", "telemetry_owner", "retired_at"}
RDF_MEDIA_TYPES = {"application/ld+json": "json-ld", "text/turtle": "turtle"}
CIM, SAREF = "http://iec.ch/TC57/CIM100#", "https://saref.etsi.org/core/"
# The type of each row as the class the grid export uses (CIM, SAREF, gridtwin for the gaps); fields are the twin's
# field names (units in the names) in the gridtwin namespace.
TYPE_CLASSES = {"bus": CIM + "TopologicalNode", "external_grid": CIM + "ExternalNetworkInjection", "line": CIM + "ACLineSegment",
                "transformer": CIM + "PowerTransformer", "switch": CIM + "Switch", "load": CIM + "EnergyConsumer",
                "static_generator": CIM + "PowerElectronicsConnection", "storage": CIM + "BatteryUnit",
                "ev_charger": GT + "EVChargingStation", "meter": SAREF + "Meter"}
JSONLD_CONTEXT = {"@vocab": GT, "iri": "@id", "type": "@type", "results": "@graph", "name": CIM + "IdentifiedObject.name",
                  **TYPE_CLASSES}
# Keys whose values are IRIs of other nodes: JSON-LD links them instead of keeping strings.
REFERENCE_KEYS = ("grid", "feeder", "owner", "bus", "other_bus", "from_bus", "to_bus", "hv_bus", "lv_bus", "base_voltage",
                  "measured_iri", "asset_iri", "point_iri", "group")


def asset_rows(queryset: QuerySet, model) -> list[dict]:
    """Rows of one twin model as dicts: scalar fields as stored, foreign keys as the IRI of the row they point to."""
    scalars, references = [], {}
    for field in model._meta.concrete_fields:
        if field.name in SKIPPED_FIELDS:
            continue
        if field.is_relation:
            references[field.name] = f"{field.name}__iri"
        else:
            scalars.append(field.name)
    values = queryset.order_by("id").values(*scalars, *references.values(), "grid__iri")
    type_name = TYPE_OF_MODEL.get(model, model._meta.model_name)
    rows = []
    for value in values:
        row = {"iri": value["iri"], "type": type_name, "grid": value["grid__iri"]}
        row.update({name: value[name] for name in scalars if name != "iri"})
        row.update({name: value[lookup] for name, lookup in references.items()})
        rows.append(row)
    return rows


def redact(rows: list[dict], drop_fields: frozenset[str]) -> list[dict]:
    """The rows without the fields an agreement drops (at any depth of nested dicts and lists)."""
    if not drop_fields:
        return rows
    return [_redact(row, drop_fields) for row in rows]


def _redact(value, drop_fields: frozenset[str]):
    if isinstance(value, dict):
        return {k: _redact(v, drop_fields) for k, v in value.items() if k not in drop_fields}
    if isinstance(value, list):
        return [_redact(v, drop_fields) for v in value]
    return value


def negotiated_format(accept: str) -> str:
    """json, json-ld or turtle from an Accept header (JSON unless an RDF type is preferred)."""
    for item in accept.split(","):
        media_type = item.split(";")[0].strip().lower()
        if media_type in RDF_MEDIA_TYPES:
            return RDF_MEDIA_TYPES[media_type]
        if media_type in ("application/json", "*/*", "application/*"):
            return "json"
    return "json"


def as_jsonld(body: dict) -> dict:
    """The response body as JSON-LD: the same keys, with an inline context (gridtwin vocabulary; `iri` is the node's @id)."""
    return {"@context": {**JSONLD_CONTEXT, **{key: {"@type": "@id"} for key in REFERENCE_KEYS}}, **body}


def as_turtle(body: dict) -> bytes:
    """The JSON-LD form of the body as Turtle (parsed with its inline context only, never a remote one)."""
    graph = Graph()
    graph.parse(data=orjson.dumps(as_jsonld(body), default=str), format="json-ld")
    for prefix, namespace in (("gt", GT), ("cim", CIM), ("saref", SAREF)):
        graph.bind(prefix, namespace)
    return graph.serialize(format="turtle").encode()
