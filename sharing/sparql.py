"""Policy-scoped SPARQL: the permitted graph of an agreement (built, cached), the query guard, and an evaluator with real limits.

**The permitted graph** is the twin view one agreement grants, as triples: the rows of the REST third-party views
(`sharing.api.sparql.permitted_rows` hands them in, built by the same row functions and redacted the same way), each
row a node with the IRI, class and terms of their JSON-LD (`sharing.api.rows`): the row's IRI as subject (rows without
one, violations and hosting capacity, are blank nodes), its type as `rdf:type` (TYPE_CLASSES: CIM / SAREF / gridtwin),
every other key a gridtwin term (`https://w3id.org/gridtwin/ontology#<key>`; `name` is `cim:IdentifiedObject.name`),
references to other rows as IRIs, numbers, booleans and times as typed literals (xsd:double, integer, boolean,
dateTime). Telemetry time series are not in it: `/shared/telemetry` serves them aggregated (k-suppressed, at the
agreement's resolution), and principle 2 keeps readings out of any triple store.

It is materialised into an in-memory Oxigraph store per agreement (id, uid, version and a digest of its terms) and
kept while a fingerprint of the covered grids' data stays the same: per table (grids, feeders, base voltages, buses,
every asset type, violations, succeeded runs and their hosting results) the row count, the largest id and, on
PostgreSQL, the sum of the rows' `xmin`, so any insert, update or delete changes it — also edits that do not bump
`Grid.version`, such as admin saves (other databases — SQLite, the embedded demo — have no `xmin`: there an edit in
place that adds or removes no row and bumps no version shows once the graph is rebuilt for another reason). One SQL
statement. The cache is per process, LRU, bounded in graphs
(`GRIDTWIN_SPARQL_CACHE_GRAPHS`) and triples (`GRIDTWIN_SPARQL_CACHE_TRIPLES`); an amendment's graph replaces the
one of the version it amends; a graph larger than the whole budget is built for its query and not kept. The first
query after an agreement or a grid changes builds ("cold"); later ones reuse the store ("warm").

Measured with benchmarks/sharing_sparql.py (2-core machine; SimBench 1-MVLV-urban-all-0-sw imported: 31k topological
nodes with the switches' auxiliary ones, 44k assets; an agreement over 47 of its 285 feeders: 37.5k buses and
assets, 344k triples): building costs 35 ms per 1,000 assets on a quiet machine (73 ms under load), a third of it
reading the rows through the ORM, two thirds making terms and filling Oxigraph; 9.2 triples per asset; ~460 bytes
of resident memory per triple (160 MB for that graph; the default budget of 1M triples is ~460 MB per web worker at
most). The fingerprint costs 12 ms over the grid's 75k rows. A cold two-hop query took 1.5 s, a warm one 41–43 ms
p50 (the query itself 0.65 ms; fork 9–24 ms at 825 MB resident; fingerprint 12 ms; authentication, decision, DRF and
the audit write 5–18 ms), against 0.5–0.8 ms for plain Oxigraph in process on the whole grid, without policy, HTTP
or audit; a heavy query (a global two-hop count, ~270 ms) costs the same through the endpoint as in plain Oxigraph.

**The guard** (`query_form`, after `query_prepared`): SPARQL's codepoint escapes (`\\uXXXX`, `\\UXXXXXXXX`) are
expanded first, as the spec says a processor does before parsing; text that still holds an escape after that (an
escape that spelled another one) is refused, so neither parser can decode anything the check did not see, and exactly
the checked text is evaluated. The text is parsed with rdflib's *query* grammar only (an update never parses) and both
the parse tree and the algebra are walked: SERVICE, FROM / FROM NAMED and GRAPH are refused. Only SELECT, ASK,
CONSTRUCT and DESCRIBE exist in that grammar. Refusals are 400 with `reason` `sparql_syntax`, or `sparql_forbidden`
and the `feature`. The parse (3–13 ms) runs in the evaluator's child too (pyparsing has no limit of its own); a text
that passed is remembered per process (`CHECKED`), so a repeated query is not parsed again.

**The evaluator** (`run_limited`, `query_answer`): pyoxigraph cannot be interrupted inside one `next()`, so every check
and every evaluation runs in a child forked from the web worker (gunicorn's sync workers are single-threaded) —
copy-on-write, so the cached store is shared and nothing is shipped — and killed at the deadline
(`GRIDTWIN_SPARQL_TIMEOUT_S`). The child keeps only the result pipe open besides /dev/null and may open no descriptor
(no socket: a SERVICE that got past the guard still reaches nothing, as pyoxigraph would otherwise fetch it), and has
an address-space and a CPU rlimit (`GRIDTWIN_SPARQL_MEMORY_MB`; exhausting it is `query_resources`). A fork costs
~2 ms at 190 MB resident and 9–24 ms at 825 MB; a long-lived evaluator process per worker would instead have to be fed
every graph it evaluates (Oxigraph loads ~600k triples/s: ~0.6 s for the graph above, again after every kill, which
also empties its cache), and a timeout would cost every other agreement's graph. The child stops at
`GRIDTWIN_SPARQL_MAX_ROWS` + 1 solutions or triples (`too_many_rows`), serialises with pyoxigraph's result and RDF
serializers, and answers within the time limit or not at all (`query_timeout`). Both are 400: the query is the
client's to change (add LIMIT, narrow the pattern); not 408, which says the client was too slow to send its request
and which clients and proxies retry on their own — running the same query again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import resource
import select
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

import orjson
import pyoxigraph as ox
import rdflib.plugins.sparql
from django.conf import settings
from django.db import connection
from rdflib.plugins.sparql.algebra import translateQuery
from rdflib.plugins.sparql.parser import parseQuery
from rdflib.plugins.sparql.parserutils import CompValue

from ontology.errors import OntologyError
from sharing import scope
from sharing.models import Agreement
from twin import models as twin

rdflib.plugins.sparql.SPARQL_LOAD_GRAPHS = False  # ARCHITECTURE.md, "Hostile input": rdflib never fetches FROM graphs

XSD = "http://www.w3.org/2001/XMLSchema#"
RDF_TYPE = ox.NamedNode("http://www.w3.org/1999/02/22-rdf-syntax-ns#type")
# Prefixes every query may use without declaring them (both parsers get the same ones), and Turtle output uses.
QUERY_PREFIXES = {"gt": "https://w3id.org/gridtwin/ontology#", "cim": "http://iec.ch/TC57/CIM100#", "saref": "https://saref.etsi.org/core/",
                  "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "rdfs": "http://www.w3.org/2000/01/rdf-schema#", "xsd": XSD}

DEFAULTS = {
    "GRIDTWIN_SPARQL_TIMEOUT_S": 5.0,  # wall time of checking and evaluating one query (the graph build is not counted)
    "GRIDTWIN_SPARQL_MAX_ROWS": 10_000,  # solutions of a SELECT, triples of a CONSTRUCT / DESCRIBE
    "GRIDTWIN_SPARQL_MAX_QUERY_CHARS": 20_000,
    "GRIDTWIN_SPARQL_MAX_RESULT_BYTES": 32 * 1024 * 1024,
    "GRIDTWIN_SPARQL_MEMORY_MB": 512,  # address space an evaluation may add to the worker's
    "GRIDTWIN_SPARQL_CACHE_GRAPHS": 8,
    "GRIDTWIN_SPARQL_CACHE_TRIPLES": 1_000_000,
}


@dataclass(frozen=True)
class Limits:
    """What one query may cost: seconds (check + evaluation), rows out, query characters, result bytes, extra memory."""

    timeout_s: float
    max_rows: int
    max_query_chars: int
    max_result_bytes: int
    memory_bytes: int


def limits() -> Limits:
    """The limits of the settings (`GRIDTWIN_SPARQL_*`), read per request so tests can override them."""
    value = {name: getattr(settings, name, default) for name, default in DEFAULTS.items()}
    return Limits(timeout_s=float(value["GRIDTWIN_SPARQL_TIMEOUT_S"]), max_rows=int(value["GRIDTWIN_SPARQL_MAX_ROWS"]),
                  max_query_chars=int(value["GRIDTWIN_SPARQL_MAX_QUERY_CHARS"]),
                  max_result_bytes=int(value["GRIDTWIN_SPARQL_MAX_RESULT_BYTES"]),
                  memory_bytes=int(value["GRIDTWIN_SPARQL_MEMORY_MB"]) * 1024 * 1024)


class SparqlRefused(OntologyError):
    """A query refused or stopped: the status and machine-readable reason the client sees, with details."""

    def __init__(self, reason: str, message: str, *, status: int = 400, **details):
        super().__init__(message)
        self.reason, self.status, self.details = reason, status, details

    def as_dict(self) -> dict:
        return {"reason": self.reason, "message": self.message, **self.details}

    @classmethod
    def from_dict(cls, body: dict, status: int) -> SparqlRefused:
        details = {k: v for k, v in body.items() if k not in ("reason", "message")}
        return cls(body["reason"], body["message"], status=status, **details)


def _syntax(message: str) -> SparqlRefused:
    return SparqlRefused("sparql_syntax", message)


def _forbidden(feature: str, message: str) -> SparqlRefused:
    return SparqlRefused("sparql_forbidden", message, feature=feature)


# --- the permitted graph ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vocabulary:
    """How rows become triples, in the terms of the REST views' JSON-LD: field names in the `fields` namespace, a row's
    `type` (a name or a list of names) as the class `classes` names (else `fields` + name), keys with a predicate of
    their own in `predicates`, and the keys in `references` as IRIs of other nodes."""

    fields: str
    classes: Mapping[str, str]
    predicates: Mapping[str, str] = field(default_factory=dict)
    references: frozenset[str] = frozenset()


BOOLEAN, INTEGER, DOUBLE = (ox.NamedNode(XSD + name) for name in ("boolean", "integer", "double"))
DATE_TIME, DATE = ox.NamedNode(XSD + "dateTime"), ox.NamedNode(XSD + "date")
TRUE, FALSE = ox.Literal("true", datatype=BOOLEAN), ox.Literal("false", datatype=BOOLEAN)


def _double(value: float) -> ox.Literal:
    if value != value:
        return ox.Literal("NaN", datatype=DOUBLE)
    if value in (float("inf"), float("-inf")):
        return ox.Literal("INF" if value > 0 else "-INF", datatype=DOUBLE)
    return ox.Literal(repr(value), datatype=DOUBLE)


# A row value's literal, by its Python type (bool before int: a bool is an int). Nested values (none in the views' rows)
# have no flat form and make no triple.
LITERALS = {
    str: ox.Literal,
    bool: lambda value: TRUE if value else FALSE,
    int: lambda value: ox.Literal(str(value), datatype=INTEGER),
    float: _double,
    datetime: lambda value: ox.Literal(value.isoformat(), datatype=DATE_TIME),
    date: lambda value: ox.Literal(value.isoformat(), datatype=DATE),
}


def _literal(value) -> ox.Literal | None:
    make = LITERALS.get(type(value))
    if make is None:
        make = next((f for t, f in LITERALS.items() if t is not bool and isinstance(value, t)), None)
    return make(value) if make is not None else None


def rows_to_quads(rows: Iterable[dict], vocabulary: Vocabulary) -> Iterator[ox.Quad]:
    """The triples of the rows (module docstring); a None value makes no triple, as in JSON-LD."""
    predicates: dict[str, ox.NamedNode] = {}
    classes: dict[str, ox.NamedNode] = {}
    iris: dict[str, ox.NamedNode | ox.Literal] = {}  # references repeat (grid, feeder, buses): each IRI is parsed once
    references = vocabulary.references
    quad, literals = ox.Quad, LITERALS

    def iri(value: str) -> ox.NamedNode | ox.Literal | None:
        term = iris.get(value)
        if term is None:
            try:
                term = ox.NamedNode(value)
            except ValueError:  # not an IRI after all: kept as the text REST shows
                term = ox.Literal(value)
            iris[value] = term
        return term

    for row in rows:
        if "iri" in row:
            try:
                subject = ox.NamedNode(row["iri"])
            except (ValueError, TypeError):
                continue
        else:
            subject = ox.BlankNode()
        for key, value in row.items():
            if value is None or key == "iri":
                continue
            if key == "type":
                for name in ([value] if isinstance(value, str) else value):
                    klass = classes.get(name)
                    if klass is None:
                        klass = classes[name] = ox.NamedNode(vocabulary.classes.get(name) or vocabulary.fields + name)
                    yield quad(subject, RDF_TYPE, klass)
                continue
            predicate = predicates.get(key)
            if predicate is None:
                predicate = predicates[key] = ox.NamedNode(vocabulary.predicates.get(key) or vocabulary.fields + key)
            if key in references and isinstance(value, str) and value:
                term = iri(value)
            else:
                make = literals.get(type(value))
                term = make(value) if make is not None else _literal(value)
            if term is not None:
                yield quad(subject, predicate, term)


def terms_digest(agreement: Agreement) -> str:
    """SHA-256 of the agreement's terms: a graph follows the terms it was built under, even if a row was edited in place."""
    terms = {name: getattr(agreement, agreement._meta.get_field(name).attname) for name in Agreement.TERMS}
    return hashlib.sha256(orjson.dumps(terms, default=str, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _fingerprint_tables() -> list[tuple[str, str]]:
    """(table, condition on the covered grid ids `%s` and succeeded status `%s`) of every table the graph reads."""
    grid_models = [twin.Feeder, twin.BaseVoltage, twin.Bus, *twin.ASSET_MODELS, twin.Violation]
    tables = [(twin.Grid._meta.db_table, "id = ANY(%s)")]
    tables += [(model._meta.db_table, "grid_id = ANY(%s)") for model in grid_models]
    runs = twin.LoadFlowRun._meta.db_table
    tables.append((runs, "grid_id = ANY(%s) AND status = %s"))
    hosting = f"run_id IN (SELECT id FROM {runs} WHERE grid_id = ANY(%s) AND status = %s)"  # noqa: S608  # nosec B608  # table names from the models' _meta; ids and status bound
    tables.append((twin.HostingCapacityResult._meta.db_table, hosting))
    return tables


def data_fingerprint(agreement: Agreement) -> tuple:
    """What the covered grids' data look like now, cheaply (module docstring): changes when any row the graph reads does."""
    grids = list(scope.scope_grids(agreement).order_by("id").values_list("id", "version", "updated_at"))
    ids = [g[0] for g in grids]
    if not ids:
        return (tuple(grids),)
    row_version = "coalesce(sum(xmin::text::bigint), 0)" if connection.vendor == "postgresql" else "0"
    statements, params = [], []
    for table, condition in _fingerprint_tables():
        table = connection.ops.quote_name(table)
        statements.append(f"SELECT count(*), coalesce(max(id), 0), {row_version} FROM {table} WHERE {condition}")  # noqa: S608  # nosec B608  # quoted model table, constant condition; ids bound
        params += [ids, twin.LoadFlowRun.Status.SUCCEEDED] if "status" in condition else [ids]
    if connection.vendor != "postgresql":  # no arrays: one IN list per statement
        statements = [s.replace("= ANY(%s)", f"IN ({', '.join(['%s'] * len(ids))})") for s in statements]
        params = [p for value in params for p in (value if isinstance(value, list) else [value])]
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(f"SELECT * FROM ({s}) AS t{k}" for k, s in enumerate(statements)), params)  # noqa: S608  # nosec B608  # statements of constants built above; values bound
        counts = tuple(tuple(int(v) for v in row) for row in cursor.fetchall())
    return (tuple(grids), counts)


@dataclass
class PermittedGraph:
    """One agreement's graph: the store, its size, what it was built from, what building it cost (s, bytes)."""

    store: ox.Store
    triples: int
    key: tuple
    fingerprint: tuple
    build_s: float
    memory_bytes: int


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def graph_build(rows: Iterable[dict], vocabulary: Vocabulary) -> tuple[ox.Store, int]:
    """A fresh in-memory store with the rows' triples, and their number."""
    store = ox.Store()
    store.bulk_extend(rows_to_quads(rows, vocabulary))
    return store, len(store)


class GraphCache:
    """Permitted graphs of this process, least recently used first out, bounded in graphs and in triples."""

    def __init__(self):
        self._entries: OrderedDict[tuple, PermittedGraph] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = self.hits = 0

    def lookup(self, key: tuple, fingerprint: tuple) -> PermittedGraph | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.fingerprint != fingerprint:
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def keep(self, entry: PermittedGraph, *, replaces: int | None = None) -> None:
        """Keep a new graph in place of the agreement's older one (and of the version it amends, `replaces`), then drop the
        least recently used ones over the bounds."""
        max_graphs = int(getattr(settings, "GRIDTWIN_SPARQL_CACHE_GRAPHS", DEFAULTS["GRIDTWIN_SPARQL_CACHE_GRAPHS"]))
        max_triples = int(getattr(settings, "GRIDTWIN_SPARQL_CACHE_TRIPLES", DEFAULTS["GRIDTWIN_SPARQL_CACHE_TRIPLES"]))
        with self._lock:
            for key in [k for k in self._entries if k == entry.key or k[0] in (entry.key[0], replaces)]:
                del self._entries[key]
            if entry.triples > max_triples or max_graphs < 1:
                return  # used for this query only
            self._entries[entry.key] = entry
            while len(self._entries) > max_graphs or sum(e.triples for e in self._entries.values()) > max_triples:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.builds = self.hits = 0


GRAPHS = GraphCache()


def graph_key(agreement: Agreement) -> tuple:
    """What a permitted graph is built under: the agreement (id, uid, version) and its terms."""
    return (agreement.pk, agreement.uid, agreement.version, terms_digest(agreement))


def cached_graph(agreement: Agreement, fingerprint: tuple) -> PermittedGraph | None:
    """The agreement's cached graph if the covered data still have this fingerprint (no build)."""
    return GRAPHS.lookup(graph_key(agreement), fingerprint)


def permitted_graph_build(agreement: Agreement, fingerprint: tuple, *, rows: Callable[[], Iterable[dict]],
                          vocabulary: Vocabulary) -> PermittedGraph:
    """Build the agreement's graph from `rows()` (the redacted rows of the REST views) and keep it in the cache."""
    before, started = _resident_bytes(), time.perf_counter()
    store, triples = graph_build(rows(), vocabulary)
    entry = PermittedGraph(store=store, triples=triples, key=graph_key(agreement), fingerprint=fingerprint,
                           build_s=time.perf_counter() - started, memory_bytes=max(_resident_bytes() - before, 0))
    GRAPHS.builds += 1
    GRAPHS.keep(entry, replaces=agreement.previous_id)
    return entry


# --- the guard -------------------------------------------------------------------------------------------------
CODEPOINT_ESCAPE = re.compile(r"\\u([0-9A-Fa-f]{4})|\\U([0-9A-Fa-f]{8})")
QUERY_FORMS = {"SelectQuery": "SELECT", "AskQuery": "ASK", "ConstructQuery": "CONSTRUCT", "DescribeQuery": "DESCRIBE"}
# Parse-tree and algebra node names of what the endpoint refuses, and the feature each is.
FORBIDDEN_NODES = {"ServiceGraphPattern": "SERVICE", "DatasetClause": "FROM", "GraphGraphPattern": "GRAPH", "Graph": "GRAPH"}
# Only to name the refusal of an update: the text is refused anyway, as the query grammar does not parse it.
UPDATE_START = re.compile(r"^(?:\s|#[^\n]*\n?|(?:PREFIX\s*[^\s:]*:\s*<[^>]*>|BASE\s*<[^>]*>))*"
                          r"(INSERT|DELETE|LOAD|CLEAR|CREATE|DROP|COPY|MOVE|ADD|WITH)\b", re.IGNORECASE)


def codepoints_unescaped(text: str) -> str:
    """The query after SPARQL 1.1 codepoint escape processing (§19.2), which precedes parsing.

    Refused: escapes of surrogates or beyond U+10FFFF, and text that still holds an escape afterwards (one escape
    spelling another, `\\u005Cu0049`), which a parser that expands escapes itself would decode once more.
    """
    def expand(match: re.Match) -> str:
        codepoint = int(match.group(1) or match.group(2), 16)
        if codepoint > 0x10FFFF or 0xD800 <= codepoint <= 0xDFFF:
            raise _syntax(f"invalid codepoint escape {match.group(0)}")
        return chr(codepoint)

    expanded = CODEPOINT_ESCAPE.sub(expand, text)
    if CODEPOINT_ESCAPE.search(expanded):
        raise _syntax("a codepoint escape spells another escape: write the character itself")
    return expanded


def _node_names(root) -> Iterator[str]:
    """Names of every parse-tree / algebra node under `root` (iteratively: deep queries cannot exhaust the stack)."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, CompValue):
            yield node.name
            stack.extend(node.values())
        elif isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, list | tuple | set | frozenset) or hasattr(node, "as_list"):
            stack.extend(node)


def query_form(text: str) -> str:
    """SELECT, ASK, CONSTRUCT or DESCRIBE for a query the endpoint runs; SparqlRefused otherwise (module docstring).

    Runs in the evaluator's child: rdflib's parser is pure Python and has no limit of its own.
    """
    try:
        parsed = parseQuery(text)
    except Exception as exc:  # any failure of the query grammar is the client's syntax error
        update = UPDATE_START.match(text)
        if update:
            raise _forbidden("update", f"{update.group(1).upper()}: this endpoint answers queries only, never updates") from None
        raise _syntax(f"not a SPARQL query: {str(exc)[:300]}") from None
    names = set(_node_names(parsed))
    try:
        algebra = translateQuery(parsed, initNs=QUERY_PREFIXES).algebra
    except Exception as exc:  # e.g. an undeclared prefix
        raise _syntax(f"not a SPARQL query: {str(exc)[:300]}") from None
    names |= set(_node_names(algebra))
    for name, feature in FORBIDDEN_NODES.items():
        if name in names:
            raise _forbidden(feature, f"{feature} is not allowed: queries run over the permitted graph only")
    forms = [QUERY_FORMS[name] for name in names if name in QUERY_FORMS]
    if len(forms) != 1:
        raise _syntax("a query is one SELECT, ASK, CONSTRUCT or DESCRIBE")
    return forms[0]


# --- result formats --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResultFormat:
    """A result serialisation: the media type answered, and pyoxigraph's results or RDF format."""

    media_type: str
    results: ox.QueryResultsFormat | None = None
    rdf: ox.RdfFormat | None = None


SPARQL_JSON = ResultFormat("application/sparql-results+json", results=ox.QueryResultsFormat.JSON)
SPARQL_XML = ResultFormat("application/sparql-results+xml", results=ox.QueryResultsFormat.XML)
SOLUTION_FORMATS = {
    "application/sparql-results+json": SPARQL_JSON, "application/json": SPARQL_JSON, "application/sparql-results+xml": SPARQL_XML,
    "text/csv": ResultFormat("text/csv; charset=utf-8", results=ox.QueryResultsFormat.CSV),
    "text/tab-separated-values": ResultFormat("text/tab-separated-values; charset=utf-8", results=ox.QueryResultsFormat.TSV),
}
BOOLEAN_FORMATS = {"application/sparql-results+json": SPARQL_JSON, "application/json": SPARQL_JSON,
                   "application/sparql-results+xml": SPARQL_XML}
TURTLE = ResultFormat("text/turtle; charset=utf-8", rdf=ox.RdfFormat.TURTLE)
GRAPH_FORMATS = {"text/turtle": TURTLE, "application/n-triples": ResultFormat("application/n-triples", rdf=ox.RdfFormat.N_TRIPLES),
                 "application/ld+json": ResultFormat("application/ld+json", rdf=ox.RdfFormat.JSON_LD),
                 "application/rdf+xml": ResultFormat("application/rdf+xml", rdf=ox.RdfFormat.RDF_XML)}
FORMATS_OF_FORM = {"SELECT": (SOLUTION_FORMATS, "application/sparql-results+json"),
                   "ASK": (BOOLEAN_FORMATS, "application/sparql-results+json"),
                   "CONSTRUCT": (GRAPH_FORMATS, "text/turtle"), "DESCRIBE": (GRAPH_FORMATS, "text/turtle")}


def _accepted(accept: str) -> list[str]:
    """Media types (or ranges) of an Accept header, most preferred first; q=0 ones left out."""
    found = []
    for position, item in enumerate(accept.split(",")):
        media_type, *parameters = (part.strip() for part in item.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media_type and quality > 0:
            found.append((-quality, position, media_type.lower()))
    return [media_type for _, _, media_type in sorted(found)]


def result_format(form: str, accept: str) -> ResultFormat:
    """The serialisation of a query form's results that the Accept header prefers; SparqlRefused (406) if none."""
    formats, default = FORMATS_OF_FORM[form]
    wanted = _accepted(accept or "*/*") or ["*/*"]
    for media_type in wanted:
        if media_type in formats:
            return formats[media_type]
        if media_type == "*/*":
            return formats[default]
        if media_type.endswith("/*"):
            family = media_type[:-1]
            if default.startswith(family):
                return formats[default]
            for name, chosen in formats.items():
                if name.startswith(family):
                    return chosen
    raise SparqlRefused("not_acceptable", f"{form} results are available as {', '.join(sorted(formats))}", status=406,
                        available=sorted(formats))


# --- the evaluator ---------------------------------------------------------------------------------------------
RESULT_FD = 3  # the child's only descriptor besides 0–2: its end of the result pipe


@dataclass(frozen=True)
class QueryResult:
    """Serialised results: the bytes, their media type, and how many solutions or triples they hold (1 for ASK)."""

    body: bytes
    media_type: str
    rows: int
    form: str


def _term_json(term) -> dict:
    """One RDF term in the SPARQL 1.1 JSON results format."""
    if isinstance(term, ox.NamedNode):
        return {"type": "uri", "value": term.value}
    if isinstance(term, ox.BlankNode):
        return {"type": "bnode", "value": term.value}
    if isinstance(term, ox.Literal):
        value = {"type": "literal", "value": term.value}
        if term.language:
            value["xml:lang"] = term.language
        elif term.datatype.value != XSD + "string":
            value["datatype"] = term.datatype.value
        return value
    return {"type": "triple", "value": {"subject": _term_json(term.subject), "predicate": _term_json(term.predicate),
                                        "object": _term_json(term.object)}}


def _too_many(max_rows: int, what: str) -> SparqlRefused:
    return SparqlRefused("too_many_rows", f"the query gives more than {max_rows} {what}: add LIMIT {max_rows} (or less) or narrow it",
                         max_rows=max_rows)


def _evaluate(store: ox.Store, text: str, form: str, chosen: ResultFormat, max_rows: int) -> tuple[bytes, int]:
    """Evaluate the checked text and serialise, stopping at max_rows + 1 (runs in the child)."""
    try:
        return _evaluated(store, text, form, chosen, max_rows)
    except SparqlRefused:
        raise
    except SyntaxError as exc:
        raise _syntax(f"not a SPARQL query: {str(exc)[:300]}") from None
    except (OSError, ValueError, RuntimeError, TypeError) as exc:  # pyoxigraph's evaluation errors: the query's
        raise SparqlRefused("query_failed", f"the query could not be evaluated: {str(exc)[:300]}") from None


def _evaluated(store: ox.Store, text: str, form: str, chosen: ResultFormat, max_rows: int) -> tuple[bytes, int]:
    results = store.query(text, prefixes=QUERY_PREFIXES)
    if form == "ASK":
        return results.serialize(format=chosen.results), 1
    if form == "SELECT":
        names = [variable.value for variable in results.variables]
        bindings = []
        for solution in results:
            if len(bindings) == max_rows:
                raise _too_many(max_rows, "solutions")
            bindings.append({name: _term_json(solution[name]) for name in names if solution[name] is not None})
        document = orjson.dumps({"head": {"vars": names}, "results": {"bindings": bindings}})
        if chosen.results == ox.QueryResultsFormat.JSON:
            return document, len(bindings)
        return ox.parse_query_results(document, format=ox.QueryResultsFormat.JSON).serialize(format=chosen.results), len(bindings)
    triples = []
    for triple in results:
        if len(triples) == max_rows:
            raise _too_many(max_rows, "triples")
        triples.append(triple)
    prefixes = QUERY_PREFIXES if chosen.rdf in (ox.RdfFormat.TURTLE, ox.RdfFormat.RDF_XML) else None
    return ox.serialize(triples, format=chosen.rdf, prefixes=prefixes), len(triples)


def _vm_bytes() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _sandbox(limits: Limits) -> None:
    """In the child: default signal handling; standard streams on /dev/null (a query cannot fill the worker's log with
    allocator backtraces); only the result pipe open besides them, no new descriptors; bounded memory and CPU."""
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGALRM"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    vm = _vm_bytes()
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    os.closerange(RESULT_FD + 1, max(soft, 1024))  # the pipe's original descriptor and /dev/null's, if above 3, too
    resource.setrlimit(resource.RLIMIT_NOFILE, (RESULT_FD + 1, RESULT_FD + 1))
    if vm:
        resource.setrlimit(resource.RLIMIT_AS, (vm + limits.memory_bytes, vm + limits.memory_bytes))
    cpu = int(limits.timeout_s) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _child(work: Callable[[], tuple[dict, bytes]], read_fd: int, write_fd: int, limits: Limits) -> None:
    """The forked child: run `work`, write header line + body to the pipe, exit without running anything of the parent's."""
    try:
        os.close(read_fd)
        if write_fd != RESULT_FD:
            os.dup2(write_fd, RESULT_FD)
        try:
            _sandbox(limits)
            header, body = work()
        except SparqlRefused as exc:
            header, body = {"refused": exc.as_dict(), "status": exc.status}, b""
        except MemoryError:
            header, body = {"refused": {"reason": "query_resources", "message": "the query needs more memory than a query may use"},
                            "status": 400}, b""
        except BaseException as exc:  # reported to the parent, which answers for it
            header, body = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}, b""
        header["bytes"] = len(body)
        _write_all(RESULT_FD, orjson.dumps(header) + b"\n" + body)
    finally:
        os._exit(0)


def _reap(pid: int, kill: bool) -> int:
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for _ in range(200):  # the child exits right after its last write; SIGKILL is immediate
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def run_limited(work: Callable[[], tuple[dict, bytes]], *, timeout_s: float, limits: Limits) -> tuple[dict, bytes]:
    """Run `work` in a forked child killed at `timeout_s`; its header and body, or SparqlRefused (timeout, size, crash)."""
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        _child(work, read_fd, write_fd, limits)
    os.close(write_fd)
    deadline = time.monotonic() + timeout_s
    chunks, size, killed, refusal = [], 0, False, None
    poller = select.poll()
    poller.register(read_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                killed, refusal = True, SparqlRefused("query_timeout", f"the query did not finish within {limits.timeout_s:g} s: "
                                                      "narrow it or add LIMIT", timeout_s=limits.timeout_s)
                break
            if not poller.poll(max(1, int(remaining * 1000))):
                continue
            data = os.read(read_fd, 1 << 20)
            if not data:
                break
            chunks.append(data)
            size += len(data)
            if size > limits.max_result_bytes + 65536:
                killed, refusal = True, SparqlRefused("too_many_rows", f"the results exceed {limits.max_result_bytes} bytes: add LIMIT "
                                                      "or select fewer variables", max_bytes=limits.max_result_bytes)
                break
    finally:
        os.close(read_fd)
        status = _reap(pid, killed)
    if refusal is not None:
        raise refusal
    head, _, body = b"".join(chunks).partition(b"\n")
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError:
        header = None
    if header is None or header.get("bytes") != len(body):
        signalled = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if signalled == getattr(signal, "SIGXCPU", None):
            raise SparqlRefused("query_timeout", f"the query did not finish within {limits.timeout_s:g} s", timeout_s=limits.timeout_s)
        raise SparqlRefused("query_resources", "the query could not be evaluated within the memory a query may use",
                            signal=signalled)
    if "refused" in header:
        raise SparqlRefused.from_dict(header["refused"], header["status"])
    if "error" in header:
        raise RuntimeError(f"SPARQL evaluation failed: {header['error']}")
    return header, body


_parser_warm = False


def _warm_parser() -> None:
    """Parse one query of each form in this process once, so children inherit a streamlined grammar and every lazy import."""
    global _parser_warm
    if not _parser_warm:
        for text in ("SELECT ?s WHERE { ?s a gt:X ; ^gt:y/gt:z* ?o OPTIONAL { ?o ?p 1.5 } FILTER(?o != <urn:x> && EXISTS { ?s ?p ?o }) } "
                     "GROUP BY ?s ORDER BY ?s LIMIT 1", "ASK { ?s ?p ?o }", "CONSTRUCT WHERE { ?s ?p ?o }", "DESCRIBE <urn:x>"):
            query_form(text)
        _parser_warm = True


def query_prepared(text: str, *, limits: Limits) -> str:
    """The query text as it will be checked and evaluated (escapes expanded), or SparqlRefused."""
    if not text or not text.strip():
        raise SparqlRefused("query_required", "send a query: ?query=, a form field query= or an application/sparql-query body")
    if len(text) > limits.max_query_chars:
        raise SparqlRefused("query_too_long", f"the query has {len(text)} characters; the limit is {limits.max_query_chars}",
                            max_chars=limits.max_query_chars)
    return codepoints_unescaped(text)


class CheckedQueries:
    """The verdicts of the guard on query texts it passed (text → form), least recently used first out: the same text
    (a dashboard polling) is parsed once per process. rdflib's parser costs ~3–12 ms per query."""

    def __init__(self, size: int = 256):
        self._forms: OrderedDict[str, str] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, text: str) -> str | None:
        with self._lock:
            form = self._forms.get(text)
            if form is not None:
                self._forms.move_to_end(text)
            return form

    def keep(self, text: str, form: str) -> None:
        with self._lock:
            self._forms[text] = form
            while len(self._forms) > self._size:
                self._forms.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._forms.clear()


CHECKED = CheckedQueries()


def query_answer(text: str, accept: str, *, cached: PermittedGraph | None, build: Callable[[], PermittedGraph],
                 limits: Limits) -> tuple[QueryResult, PermittedGraph]:
    """Check, negotiate and evaluate one query over the permitted graph, within the limits; SparqlRefused otherwise.

    With the graph `cached`, one child checks and evaluates. Without, a child checks first (a refused or unacceptable
    query costs no build), then the graph is built here and a second child evaluates, in what is left of the time
    limit (the build is not the query's time). A text the guard passed before is not parsed again (CHECKED).
    """
    expanded = query_prepared(text, limits=limits)
    _warm_parser()
    started = time.monotonic()
    known = CHECKED.get(expanded)
    graph = cached
    if graph is None:
        if known is None:
            header, _ = run_limited(lambda: ({"form": query_form(expanded)}, b""), timeout_s=limits.timeout_s, limits=limits)
            known = header["form"]
            CHECKED.keep(expanded, known)
        result_format(known, accept)  # 406 before building
        checked_s = time.monotonic() - started
        graph = build()
        remaining = max(limits.timeout_s - checked_s, 0.05)
    else:
        remaining = limits.timeout_s
    store, max_rows = graph.store, limits.max_rows

    def work() -> tuple[dict, bytes]:
        form = known or query_form(expanded)
        chosen = result_format(form, accept)
        body, rows = _evaluate(store, expanded, form, chosen, max_rows)
        return {"rows": rows, "form": form, "media_type": chosen.media_type}, body

    header, body = run_limited(work, timeout_s=remaining, limits=limits)
    CHECKED.keep(expanded, header["form"])
    return QueryResult(body=body, media_type=header["media_type"], rows=header["rows"], form=header["form"]), graph
