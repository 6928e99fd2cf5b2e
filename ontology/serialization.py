"""Serialising graphs in the four RDF formats gridtwin speaks, fast (pyoxigraph) and with our prefixes."""

from __future__ import annotations

import pyoxigraph as ox
from rdflib import BNode, Graph, URIRef
from rdflib.namespace import XSD

from ontology.namespaces import PREFIXES

FORMATS = {
    "turtle": ("text/turtle", ox.RdfFormat.TURTLE, "ttl"),
    "json-ld": ("application/ld+json", ox.RdfFormat.JSON_LD, "jsonld"),
    "xml": ("application/rdf+xml", ox.RdfFormat.RDF_XML, "rdf"),
    "nt": ("application/n-triples", ox.RdfFormat.N_TRIPLES, "nt"),
}
MEDIA_TYPE_FORMATS = {media_type: name for name, (media_type, _, _) in FORMATS.items()}


def ox_triples(graph: Graph) -> list:
    """The graph's triples as pyoxigraph terms."""
    cache: dict = {}

    def node(term):
        found = cache.get(term)
        if found is None:
            if isinstance(term, URIRef):
                found = ox.NamedNode(str(term))
            elif isinstance(term, BNode):
                found = ox.BlankNode(str(term))
            elif term.language:
                found = ox.Literal(str(term), language=term.language)
            else:
                found = ox.Literal(str(term), datatype=ox.NamedNode(str(term.datatype or XSD.string)))
            cache[term] = found
        return found

    return [ox.Triple(node(s), node(p), node(o)) for s, p, o in graph]


def serialize(graph: Graph, format_name: str) -> bytes:
    """The graph as bytes in one of FORMATS, triples sorted so the same graph gives the same bytes."""
    _, rdf_format, _ = FORMATS[format_name]
    triples = sorted(ox_triples(graph), key=lambda t: (str(t.subject), str(t.predicate), str(t.object)))
    prefixes = {k: str(v) for k, v in PREFIXES.items()} if rdf_format in (ox.RdfFormat.TURTLE, ox.RdfFormat.RDF_XML) else None
    return ox.serialize(triples, format=rdf_format, prefixes=prefixes)
