"""The third-party views' rows (`sharing.rows`, redacted once) rendered as JSON, JSON-LD or Turtle.

Every format is rendered from the same redacted rows, so a field an agreement drops is absent from all of
them. References to other twin rows are IRIs, never internal ids.
"""

from __future__ import annotations

import orjson
from rdflib import Graph

GT = "https://w3id.org/gridtwin/ontology#"
RDF_MEDIA_TYPES = {"application/ld+json": "json-ld", "text/turtle": "turtle"}
CIM, SAREF = "http://iec.ch/TC57/CIM100#", "https://saref.etsi.org/core/"
# The type of each row as the class the grid export uses (CIM, SAREF, gridtwin for the gaps); fields are the twin's
# field names (units in the names) in the gridtwin namespace.
TYPE_CLASSES = {"bus": CIM + "TopologicalNode", "external_grid": CIM + "ExternalNetworkInjection", "line": CIM + "ACLineSegment",
                "transformer": CIM + "PowerTransformer", "switch": CIM + "Switch", "load": CIM + "EnergyConsumer",
                "static_generator": CIM + "PowerElectronicsConnection", "storage": CIM + "BatteryUnit",
                "ev_charger": GT + "EVChargingStation", "meter": SAREF + "Meter"}
JSONLD_CONTEXT = {"@vocab": GT, "iri": "@id", "type": "@type", "results": "@graph", "name": CIM + "IdentifiedObject.name"}
# Keys whose values are IRIs of other nodes: JSON-LD links them instead of keeping strings.
REFERENCE_KEYS = ("grid", "feeder", "owner", "bus", "other_bus", "from_bus", "to_bus", "hv_bus", "lv_bus", "base_voltage",
                  "measured_iri", "asset_iri", "point_iri", "group")


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
    """The response body as JSON-LD: the same keys, with an inline context (gridtwin vocabulary; `iri` is the node's @id).

    Row types are written as their class IRIs: a type name can also be a reference key (`bus`), and the context's
    reference term would otherwise turn the class into gt:bus."""
    return {"@context": {**JSONLD_CONTEXT, **{key: {"@type": "@id"} for key in REFERENCE_KEYS}}, **_typed(body)}


def _typed(value):
    if isinstance(value, dict):
        return {k: (TYPE_CLASSES.get(v, v) if k == "type" and isinstance(v, str) else _typed(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return value


def as_turtle(body: dict) -> bytes:
    """The JSON-LD form of the body as Turtle (parsed with its inline context only, never a remote one)."""
    graph = Graph()
    graph.parse(data=orjson.dumps(as_jsonld(body), default=str), format="json-ld")
    for prefix, namespace in (("gt", GT), ("cim", CIM), ("saref", SAREF)):
        graph.bind(prefix, namespace)
    return graph.serialize(format="turtle").encode()
