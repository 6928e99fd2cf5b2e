"""An RDF graph held as pyoxigraph quads: what parsing yields, what validation and the twin codec read.

rdflib is kept for what it is good at (small graphs, tests, converters that build graphs triple by
triple); a large upload never has to become an rdflib Graph, which costs ~18 µs per triple.
"""

from __future__ import annotations

from functools import cached_property

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import XSD


class RdfDocument:
    """An immutable list of triples (as default-graph quads) with a lazily built Oxigraph store."""

    def __init__(self, quads: list[ox.Quad]):
        self.quads = quads

    def __len__(self) -> int:
        return len(self.quads)

    def __add__(self, other: RdfDocument) -> RdfDocument:
        return RdfDocument(self.quads + other.quads)

    @cached_property
    def store(self) -> ox.Store:
        """An in-memory Oxigraph store of the triples, for SPARQL."""
        store = ox.Store()
        store.bulk_extend(self.quads)
        return store

    @cached_property
    def subjects(self) -> set:
        return {q.subject for q in self.quads}

    @classmethod
    def from_graph(cls, graph: Graph | RdfDocument) -> RdfDocument:
        """The document of an rdflib Graph (or the document itself)."""
        if isinstance(graph, RdfDocument):
            return graph
        cache: dict = {}
        return cls([ox.Quad(ox_term(s, cache), ox_term(p, cache), ox_term(o, cache)) for s, p, o in graph])

    def to_graph(self) -> Graph:
        """The triples as an rdflib Graph."""
        graph = Graph()
        cache: dict = {}
        for quad in self.quads:
            graph.add((rdflib_term(quad.subject, cache), rdflib_term(quad.predicate, cache), rdflib_term(quad.object, cache)))
        return graph


def ox_term(term, cache: dict):
    """The pyoxigraph term of an rdflib term."""
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


def rdflib_term(term, cache: dict):
    """The rdflib term of a pyoxigraph term."""
    found = cache.get(term)
    if found is None:
        if isinstance(term, ox.NamedNode):
            found = URIRef(term.value)
        elif isinstance(term, ox.BlankNode):
            found = BNode(term.value)
        elif term.language:
            found = Literal(term.value, lang=term.language)
        else:
            found = Literal(term.value, datatype=URIRef(term.datatype.value))
        cache[term] = found
    return found


def term_key(term) -> str:
    """A node's identity as a string: the IRI, or `_:id` for a blank node (used in reports and the codec)."""
    return f"_:{term.value}" if isinstance(term, ox.BlankNode) else term.value


def typed_literal(value) -> Literal:
    """The one rule for writing a Python value into RDF: bool → xsd:boolean, int → xsd:integer,
    float → xsd:double, anything else → a plain string. Keeping it in one place keeps exports lossless."""
    if isinstance(value, bool):
        return Literal(value)
    if isinstance(value, int):
        return Literal(value, datatype=XSD.integer)
    if isinstance(value, float):
        return Literal(value, datatype=XSD.double)
    return Literal(str(value))
