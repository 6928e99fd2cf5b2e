"""Safe parsing of untrusted RDF uploads.

Parsing runs in pyoxigraph (Rust, iterative: deep nesting cannot blow the stack, no remote JSON-LD
context is ever fetched) and yields an `RdfDocument`. Before any parser sees
the bytes: the size is capped, RDF/XML with a DOCTYPE or ENTITY declaration is refused, the
body must be UTF-8 and its nesting depth is bounded (pyoxigraph segfaults on deep JSON-LD; see
`ontology.limits`). While parsing: triples and seconds are bounded. After parsing: literals are
capped, NUL in them refused, and named graphs refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyoxigraph as ox

from ontology import limits
from ontology.document import RdfDocument
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


def parse_rdf(
    data: bytes, media_type: str | None, *, max_bytes: int, max_literal_chars: int, max_triples: int | None = None
) -> RdfDocument:
    """Parse an untrusted upload. Raises an `OntologyError` subclass naming the line or node at fault.

    Depth, triples (`max_triples`, default `GRIDTWIN_MAX_UPLOAD_TRIPLES`) and parse time are bounded by `ontology.limits`.
    """
    rdf_fmt = rdf_format(media_type)
    check_body(data, rdf_fmt, max_bytes=max_bytes)
    limits.check_depth(data, rdf_fmt)
    try:
        parsed = ox.parse(data, format=rdf_fmt, base_iri=UPLOAD_BASE_IRI, without_named_graphs=True)
        quads = list(limits.bounded(parsed, limit=max_triples))
    except OntologyError:  # a bound of ontology.limits (a ValueError too): already the client's error
        raise
    except SyntaxError as exc:
        message = str(exc)
        if "remote context" in message.lower() or "LoadDocumentCallback" in message:
            raise ForbiddenConstruct("JSON-LD with a remote @context is refused; inline the context") from exc
        raise RdfSyntaxError(message, line=getattr(exc, "lineno", None)) from exc
    except ValueError as exc:
        raise RdfSyntaxError(str(exc)) from exc
    except MemoryError as exc:  # pyoxigraph caps a single token (e.g. a literal) at 16 MiB
        raise ForbiddenConstruct(f"a single term is too large for the parser ({exc})") from exc
    check_terms(quads, max_literal_chars=max_literal_chars)
    return RdfDocument(quads)


def check_terms(quads: list, *, max_literal_chars: int) -> None:
    """Refuse literals longer than `max_literal_chars` or holding NUL, and RDF-star quoted triples.

    NUL (U+0000) is a character of RDF but of no PostgreSQL text: refused here, naming the node, for every body
    (the parsers already refuse it in IRIs, and an unpaired surrogate anywhere)."""
    for quad in quads:
        obj = quad.object
        if isinstance(obj, ox.Literal):
            if len(obj.value) > max_literal_chars:
                raise ForbiddenConstruct(f"a literal of {len(obj.value)} characters exceeds the limit of {max_literal_chars}",
                                         node=quad.subject.value)
            if "\x00" in obj.value:
                raise ForbiddenConstruct(f"the value of {quad.predicate.value} holds NUL (U+0000), which no text may hold",
                                         node=quad.subject.value)
        if isinstance(obj, ox.Triple) or isinstance(quad.subject, ox.Triple):
            raise ForbiddenConstruct("RDF-star quoted triples are not supported", node=str(quad.subject))
