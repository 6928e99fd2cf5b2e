"""Serialising graphs in the four RDF formats gridtwin speaks, fast (pyoxigraph) and with our prefixes."""

from __future__ import annotations

import pyoxigraph as ox
from rdflib import Graph

from ontology.document import RdfDocument
from ontology.namespaces import PREFIXES

FORMATS = {
    "turtle": ("text/turtle", ox.RdfFormat.TURTLE, "ttl"),
    "json-ld": ("application/ld+json", ox.RdfFormat.JSON_LD, "jsonld"),
    "xml": ("application/rdf+xml", ox.RdfFormat.RDF_XML, "rdf"),
    "nt": ("application/n-triples", ox.RdfFormat.N_TRIPLES, "nt"),
}
MEDIA_TYPE_FORMATS = {media_type: name for name, (media_type, _, _) in FORMATS.items()}


def ox_triples(graph: Graph | RdfDocument) -> list:
    """The graph's triples as pyoxigraph terms."""
    return [ox.Triple(q.subject, q.predicate, q.object) for q in RdfDocument.from_graph(graph).quads]


def serialize(graph: Graph | RdfDocument, format_name: str) -> bytes:
    """The graph as bytes in one of FORMATS, triples sorted so the same graph gives the same bytes."""
    _, rdf_format, _ = FORMATS[format_name]
    triples = sorted(ox_triples(graph), key=lambda t: (str(t.subject), str(t.predicate), str(t.object)))
    prefixes = {k: str(v) for k, v in PREFIXES.items()} if rdf_format in (ox.RdfFormat.TURTLE, ox.RdfFormat.RDF_XML) else None
    return ox.serialize(triples, format=rdf_format, prefixes=prefixes)
