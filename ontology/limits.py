"""Bounds on the work one untrusted RDF body may cause: nesting depth before any native parser runs, then triples
and seconds while it runs, and the number of SHACL results answered.

pyoxigraph's parsers are not safe against depth: JSON-LD objects or `@list`s nested ~4,000 deep and RDF 1.2
triple terms `<<( … )>>` nested ~50,000 deep segfault the whole process (no exception to catch), and RDF/XML
costs time quadratic in element depth (40,000 deep: tens of seconds). So the depth of a body is measured on its
raw bytes first. RDF/XML is measured exactly by expat (which also refuses XML that is not well-formed); JSON-LD,
Turtle and N-Triples by a scanner that may count too deep but never too shallow: strings, IRIs and comments are
skipped with the same lexical rules the parsers use, every other bracket counts, and a closing bracket never takes
the depth below zero. Both run in C (regex passes and numpy; 50 MB in ~1 s).

Each bound is a setting with the default below: `GRIDTWIN_MAX_RDF_DEPTH`, `GRIDTWIN_MAX_UPLOAD_TRIPLES`,
`GRIDTWIN_RDF_PARSE_SECONDS`, `GRIDTWIN_MAX_REPORTED_VIOLATIONS` (JSON 422) and `GRIDTWIN_MAX_REPORT_RESULTS`
(the `?report=turtle` graph).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from xml.parsers import expat

import numpy as np
import pyoxigraph as ox
from django.conf import settings

from ontology.errors import NestingTooDeep, ParseTimeExceeded, RdfSyntaxError, TooManyTriples

# A real model nests a handful of levels (JSON-LD @graph → node → value object → @list; CGMES 3–4 elements).
DEFAULT_MAX_DEPTH = 64
# ~110k assets; 50 MB of Turtle is ~500k triples, 50 MB of N-Triples at most ~2M.
DEFAULT_MAX_TRIPLES = 1_000_000
# pyoxigraph parses ~400k triples/s: a legitimate 50 MB body takes 1–3 s.
DEFAULT_PARSE_SECONDS = 20.0
DEFAULT_REPORTED_VIOLATIONS = 100
DEFAULT_REPORT_RESULTS = 10_000


def max_depth() -> int:
    return int(getattr(settings, "GRIDTWIN_MAX_RDF_DEPTH", DEFAULT_MAX_DEPTH))


def max_triples() -> int:
    return int(getattr(settings, "GRIDTWIN_MAX_UPLOAD_TRIPLES", DEFAULT_MAX_TRIPLES))


def parse_seconds() -> float:
    return float(getattr(settings, "GRIDTWIN_RDF_PARSE_SECONDS", DEFAULT_PARSE_SECONDS))


def max_reported_violations() -> int:
    return int(getattr(settings, "GRIDTWIN_MAX_REPORTED_VIOLATIONS", DEFAULT_REPORTED_VIOLATIONS))


def max_report_results() -> int:
    return int(getattr(settings, "GRIDTWIN_MAX_REPORT_RESULTS", DEFAULT_REPORT_RESULTS))


# --- depth ------------------------------------------------------------------------------------------------------
# Every pattern can always match once started (closing delimiters optional), so an unterminated string costs one
# linear scan, never one per start position.
JSON_SKIP = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
# Turtle and N-Triples: long strings (ended at their first unescaped closing triple quote), short strings
# (never across a line end), IRIs, escapes outside strings (`ex:a\#b`), comments.
TURTLE_SKIP = re.compile(
    rb'"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*(?:"""|\Z)'
    rb"|'''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*(?:'''|\Z)"
    rb'|"[^"\\\r\n]*(?:\\.[^"\\\r\n]*)*"?'
    rb"|'[^'\\\r\n]*(?:\\.[^'\\\r\n]*)*'?"
    rb'|<[^<>"{}|^`\\\x00-\x20]*>'
    rb"|\\."
    rb"|#[^\r\n]*",
    re.DOTALL,
)
def _depth_of(skeleton: bytes, opens: bytes, closes: bytes) -> int:
    """Deepest nesting of `opens`/`closes` in `skeleton`, a closing one never going below zero."""
    chars = np.frombuffer(skeleton, dtype=np.uint8)
    step = np.isin(chars, np.frombuffer(opens, dtype=np.uint8)).astype(np.int32)
    step -= np.isin(chars, np.frombuffer(closes, dtype=np.uint8))
    if not step.any():
        return 0
    level = np.cumsum(step, dtype=np.int64)
    floor = np.minimum(np.minimum.accumulate(level), 0)
    return int((level - floor).max())


class _Deeper(Exception):
    pass


def _xml_depth(data: bytes, stop_at: int | None) -> int:
    """Element depth of an XML document, measured exactly by expat (C, iterative, namespace-aware, stopped at the first
    well-formedness error or at `stop_at` + 1 levels). The caller has refused any DOCTYPE, so no entity is expanded."""
    parser = expat.ParserCreate(namespace_separator=" ")
    depth = peak = 0

    def start(name, attributes):
        nonlocal depth, peak
        depth += 1
        peak = max(peak, depth)
        if stop_at is not None and depth > stop_at:
            raise _Deeper

    def end(name):
        nonlocal depth
        depth -= 1

    parser.StartElementHandler, parser.EndElementHandler = start, end
    try:
        parser.Parse(data, True)
    except _Deeper:
        pass
    except expat.ExpatError as exc:
        raise RdfSyntaxError(f"not well-formed XML: {expat.ErrorString(exc.code)} (column {exc.offset})", line=exc.lineno) from exc
    return peak


def nesting_depth(data: bytes, rdf_format: ox.RdfFormat, *, stop_at: int | None = None) -> int:
    """How deep the body nests, counted at least as deep as any RDF parser will nest (for RDF/XML: not beyond `stop_at` + 1,
    and a body that is not well-formed XML raises `RdfSyntaxError`)."""
    if rdf_format == ox.RdfFormat.JSON_LD:
        return _depth_of(JSON_SKIP.sub(b" ", data), b"[{", b"]}")
    if rdf_format == ox.RdfFormat.RDF_XML:
        return _xml_depth(data, stop_at)
    # Turtle and N-Triples: blank-node property lists, collections, RDF 1.2 triple terms and annotations
    return _depth_of(TURTLE_SKIP.sub(b" ", data), b"[({<", b"])}>")


def check_depth(data: bytes, rdf_format: ox.RdfFormat, *, limit: int | None = None) -> None:
    """Refuse a body nested deeper than `limit` (default `GRIDTWIN_MAX_RDF_DEPTH`), before any parser sees it."""
    limit = max_depth() if limit is None else limit
    depth = nesting_depth(data, rdf_format, stop_at=limit)
    if depth > limit:
        raise NestingTooDeep(f"the body nests more than {limit} levels deep" if rdf_format == ox.RdfFormat.RDF_XML
                             else f"the body nests {depth} levels deep; the limit is {limit}")


# --- while parsing ----------------------------------------------------------------------------------------------


def bounded(quads: Iterable, *, limit: int | None = None, seconds: float | None = None) -> Iterator:
    """The parser's quads, stopped at `limit` + 1 triples or after `seconds` of parsing."""
    limit = max_triples() if limit is None else limit
    seconds = parse_seconds() if seconds is None else seconds
    deadline = time.monotonic() + seconds
    for count, quad in enumerate(quads, start=1):
        if count > limit:
            raise TooManyTriples(f"the body has more than {limit} triples")
        if not count % 4096 and time.monotonic() > deadline:
            raise ParseTimeExceeded(f"parsing took longer than {seconds:g} s; send a smaller or simpler body")
        yield quad
    if time.monotonic() > deadline:
        raise ParseTimeExceeded(f"parsing took longer than {seconds:g} s; send a smaller or simpler body")
