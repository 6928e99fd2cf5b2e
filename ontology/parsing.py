"""Safe parsing of untrusted RDF uploads into an rdflib Graph.

Parsing runs in pyoxigraph (Rust, iterative: deep nesting cannot blow the stack, no remote JSON-LD
context is ever fetched) and is then copied into rdflib, which pyshacl needs. Before any parser sees
the bytes: the size is capped, RDF/XML with a DOCTYPE or ENTITY declaration is refused, and the
body must be UTF-8. After parsing: literals are capped and named graphs refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef

from ontology.errors import EmptyUpload, ForbiddenConstruct, OntologyError, RdfSyntaxError, UnsupportedFormat, UploadTooLarge

MEDIA_TYPES = {
    "text/turtle": ox.RdfFormat.TURTLE,
    "application/x-turtle": ox.RdfFormat.TURTLE,
    "application/ld+json": ox.RdfFormat.JSON_LD,
    "application/rdf+xml": ox.RdfFormat.RDF_XML,
    "application/n-triples": ox.RdfFormat.N_TRIPLES,
}
EXTENSIONS = {
    ".ttl": "text/turtle",
    ".jsonld": "application/ld+json",
    ".json": "application/ld+json",
    ".rdf": "application/rdf+xml",
    ".xml": "application/rdf+xml",
    ".owl": "application/rdf+xml",
    ".nt": "application/n-triples",
}
DOCTYPE = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
# Base for relative IRIs in uploads; relative IRIs are resolved, never fetched.
UPLOAD_BASE_IRI = "urn:gridtwin:upload:"


def media_type_for_path(path: Path) -> str:
    """The media type of a file, from its extension."""
    media_type = EXTENSIONS.get(path.suffix.lower())
    if media_type is None:
        raise UnsupportedFormat(f"{path.name}: unknown RDF file extension {path.suffix!r}; use one of {', '.join(sorted(EXTENSIONS))}")
    return media_type


def rdf_format(media_type: str | None) -> ox.RdfFormat:
    """The parser format of a Content-Type header value (parameters such as charset are ignored)."""
    base = (media_type or "").split(";")[0].strip().lower()
    if base not in MEDIA_TYPES:
        raise UnsupportedFormat(f"unsupported content type {base or '(none)'!r}; send one of {', '.join(sorted(MEDIA_TYPES))}")
    return MEDIA_TYPES[base]


def check_body(data: bytes, rdf_fmt: ox.RdfFormat, *, max_bytes: int) -> str:
    """Refuse empty, oversized, non-UTF-8 bodies and XML DOCTYPE/ENTITY declarations; return the text."""
    if not data or not data.strip():
        raise EmptyUpload("the body is empty")
    if len(data) > max_bytes:
        raise UploadTooLarge(f"the body has {len(data)} bytes; the limit is {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RdfSyntaxError(f"the body is not UTF-8 (byte {exc.start})") from exc
    if rdf_fmt == ox.RdfFormat.RDF_XML:
        match = DOCTYPE.search(text)
        if match:
            line = text.count("\n", 0, match.start()) + 1
            raise ForbiddenConstruct("RDF/XML with a DOCTYPE or ENTITY declaration is refused", line=line)
    return text


def parse_rdf(data: bytes, media_type: str | None, *, max_bytes: int, max_literal_chars: int) -> Graph:
    """Parse an untrusted upload. Raises an `OntologyError` subclass naming the line or node at fault."""
    rdf_fmt = rdf_format(media_type)
    check_body(data, rdf_fmt, max_bytes=max_bytes)
    try:
        quads = ox.parse(data, format=rdf_fmt, base_iri=UPLOAD_BASE_IRI, without_named_graphs=True)
        return to_rdflib(quads, max_literal_chars=max_literal_chars)
    except SyntaxError as exc:
        message = str(exc)
        if "remote context" in message.lower() or "LoadDocumentCallback" in message:
            raise ForbiddenConstruct("JSON-LD with a remote @context is refused; inline the context") from exc
        raise RdfSyntaxError(message, line=getattr(exc, "lineno", None)) from exc
    except OntologyError:
        raise
    except ValueError as exc:
        raise RdfSyntaxError(str(exc)) from exc
    except MemoryError as exc:  # pyoxigraph caps a single token (e.g. a literal) at 16 MiB
        raise ForbiddenConstruct(f"a single term is too large for the parser ({exc})") from exc


def to_rdflib(quads, *, max_literal_chars: int) -> Graph:
    """Copy pyoxigraph quads into an rdflib Graph, refusing literals longer than `max_literal_chars`."""
    graph = Graph()
    nodes: dict = {}
    add = graph.add
    for quad in quads:
        add((_node(quad.subject, nodes), _node(quad.predicate, nodes), _object(quad.object, quad.subject, nodes, max_literal_chars)))
    return graph


def _node(term, cache: dict):
    node = cache.get(term)
    if node is None:
        if isinstance(term, ox.NamedNode):
            node = URIRef(term.value)
        elif isinstance(term, ox.BlankNode):
            node = BNode(term.value)
        else:
            raise ForbiddenConstruct("RDF-star quoted triples are not supported")
        cache[term] = node
    return node


def _object(term, subject, cache: dict, max_literal_chars: int):
    if not isinstance(term, ox.Literal):
        return _node(term, cache)
    if len(term.value) > max_literal_chars:
        raise ForbiddenConstruct(
            f"a literal of {len(term.value)} characters exceeds the limit of {max_literal_chars}", node=str(subject.value)
        )
    if term.language:
        return Literal(term.value, lang=term.language)
    return Literal(term.value, datatype=URIRef(term.datatype.value))


def parse_trusted_file(path: Path) -> Graph:
    """Parse one of the project's own files (vocabulary, shapes)."""
    graph = Graph()
    graph.parse(path, format="turtle")
    return graph
