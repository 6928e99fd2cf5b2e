"""SHACL validation of grid graphs against the gridtwin shapes, at the scale of whole grids.

The shapes file is the single statement of validity. gridtwin evaluates it by compiling every
constraint into one SPARQL query over the whole graph, run in Oxigraph: each query finds all focus
nodes that violate one constraint at once, instead of pyshacl's node-by-node walk (FIELD-NOTES:
~0.7 ms per asset for core constraints, ~5 ms once SHACL-SPARQL is involved). A 25k-asset grid then
validates in seconds. Only the constraint components the shapes use are compiled; a shape using any
other component is refused when the shapes load, so no constraint is ever silently skipped. The
test-suite checks that the results equal pyshacl's on the same graphs.

SHACL-SPARQL constraints bind $this in a triple pattern, so running them with $this unbound and
keeping the rows whose $this is a target gives exactly the focus-node-by-focus-node result.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.namespace import RDF, SH, XSD

from ontology.document import RdfDocument, term_key

SHAPES_PATH = Path(__file__).parent / "shapes" / "gridtwin-shapes.ttl"
PLACEHOLDER = re.compile(r"\{[?$](\w+)\}")
XSD_DOUBLE = ox.NamedNode(str(XSD.double))
NUMERIC_TYPES = {str(t) for t in (XSD.integer, XSD.decimal, XSD.float, XSD.int, XSD.long, XSD.short)}
LEXICAL_CHECKS = {str(XSD.double): float, str(XSD.integer): int, str(XSD.boolean): lambda v: {"true": 1, "false": 0, "1": 1, "0": 0}[v]}
VALUE_COMPONENTS = {SH.datatype, SH["class"], SH.nodeKind, SH.minInclusive, SH.maxInclusive, SH.minExclusive, SH.maxExclusive, SH["in"]}
SUPPORTED = {*VALUE_COMPONENTS, SH.minCount, SH.maxCount, SH.hasValue}
PROPERTY_SHAPE_KEYS = {*SUPPORTED, SH.path, SH.message, SH.severity, SH.name, SH.description, RDF.type}
COMPARATORS = {SH.minInclusive: ">=", SH.maxInclusive: "<=", SH.minExclusive: ">", SH.maxExclusive: "<"}


class ShapesError(RuntimeError):
    """The shapes use something this engine does not evaluate (a defect of the shapes, not of a model)."""


@dataclass
class Violation:
    """One SHACL result, in the JSON form the API answers with."""

    focus_node: str
    message: str
    severity: str = "Violation"
    path: str | None = None
    value: str | None = None
    source_shape: str | None = None

    def as_dict(self) -> dict:
        return {"focus_node": self.focus_node, "path": self.path, "value": self.value, "message": self.message,
                "severity": self.severity, "source_shape": self.source_shape}


@dataclass
class ValidationReport:
    """The verdict on a graph: conforms when no result has severity Violation."""

    violations: list[Violation] = field(default_factory=list)

    @property
    def conforms(self) -> bool:
        return not any(v.severity == "Violation" for v in self.violations)

    @property
    def violation_count(self) -> int:
        return sum(v.severity == "Violation" for v in self.violations)

    def summary(self, *, limit: int) -> dict:
        """The verdict in the JSON form of a 422: every result counted (also per shape and path), the first `limit` listed.

        A model of 200,000 bad nodes would otherwise answer 200,000 results (55 MB from a 400 KB upload).
        """
        by_constraint: dict[tuple, int] = {}
        for v in self.violations:
            key = (v.source_shape, v.path, v.severity)
            by_constraint[key] = by_constraint.get(key, 0) + 1
        ranked = sorted(by_constraint.items(), key=lambda item: (-item[1], [k or "" for k in item[0]]))
        return {
            "conforms": self.conforms,
            "violation_count": self.violation_count,
            "result_count": len(self.violations),
            "truncated": len(self.violations) > limit,
            "by_constraint": [{"source_shape": shape, "path": path, "severity": severity, "count": count}
                              for (shape, path, severity), count in ranked[:limit]],
            "violations": [v.as_dict() for v in self.violations[:limit]],
        }

    def as_graph(self, *, limit: int | None = None) -> Graph:
        """The report as a SHACL ValidationReport graph (with the first `limit` results only, when given)."""
        graph = Graph()
        graph.bind("sh", SH)
        report = BNode()
        graph.add((report, RDF.type, SH.ValidationReport))
        graph.add((report, SH.conforms, Literal(self.conforms)))
        for v in self.violations[:limit]:
            result = BNode()
            graph.add((report, SH.result, result))
            graph.add((result, RDF.type, SH.ValidationResult))
            graph.add((result, SH.focusNode, _term(v.focus_node)))
            graph.add((result, SH.resultMessage, Literal(v.message)))
            graph.add((result, SH.resultSeverity, SH[v.severity]))
            if v.path and v.path.startswith("^"):
                path = BNode()
                graph.add((path, SH.inversePath, URIRef(v.path[1:])))
                graph.add((result, SH.resultPath, path))
            elif v.path:
                graph.add((result, SH.resultPath, URIRef(v.path)))
            if v.value is not None:
                graph.add((result, SH.value, Literal(v.value)))
            if v.source_shape:
                graph.add((result, SH.sourceShape, _term(v.source_shape)))
        return graph

    def as_turtle(self, *, limit: int | None = None) -> str:
        """The report graph as Turtle; when cut to `limit` results, a leading comment says how many there are."""
        text = self.as_graph(limit=limit).serialize(format="turtle")
        if limit is not None and len(self.violations) > limit:
            text = f"# {len(self.violations)} results ({self.violation_count} violations); the first {limit} are listed\n" + text
        return text


def _term(value: str):
    return BNode(value[2:]) if value.startswith("_:") else URIRef(value)


@dataclass(frozen=True)
class Check:
    """One compiled constraint: a SPARQL query returning ?this (and ?value, ?path) for every violation."""

    shape: str
    query: str
    message: str
    path: str | None = None
    severity: str = "Violation"


@dataclass(frozen=True)
class Shapes:
    """The compiled shapes."""

    checks: tuple[Check, ...]
    known_classes: frozenset[str]
    double_properties: frozenset[str]


@lru_cache(maxsize=1)
def load_shapes(path: Path = SHAPES_PATH) -> Shapes:
    """Parse and compile the shapes file once per process."""
    graph = Graph()
    graph.parse(path, format="turtle")
    prefixes = "".join(f"PREFIX {graph.value(d, SH.prefix)}: <{graph.value(d, SH.namespace)}>\n" for d in graph.objects(None, SH.declare))
    checks: list[Check] = []
    for shape in sorted(set(graph.subjects(SH.targetClass, None))):
        targets = sorted(str(c) for c in graph.objects(shape, SH.targetClass))
        focus = f"VALUES ?cls {{ {' '.join(f'<{t}>' for t in targets)} }} ?this a ?cls ."
        properties = sorted(graph.objects(shape, SH.property), key=str)
        for prop in properties:
            checks += _compile_property(graph, shape, prop, focus)
        if graph.value(shape, SH.closed) == Literal(True):
            checks.append(_compile_closed(graph, shape, properties, focus))
        for constraint in graph.objects(shape, SH.sparql):
            checks.append(_compile_sparql(graph, shape, constraint, targets, prefixes))
    doubles = {str(graph.value(p, SH.path)) for p in graph.subjects(SH.datatype, XSD.double) if isinstance(graph.value(p, SH.path), URIRef)}
    known = frozenset(str(c) for c in graph.objects(None, SH.targetClass))
    return Shapes(checks=tuple(checks), known_classes=known, double_properties=frozenset(doubles))


def _path(graph: Graph, prop) -> tuple[str, str]:
    """SPARQL text and report label of a property shape's path (an IRI or an inverse IRI)."""
    path = graph.value(prop, SH.path)
    if isinstance(path, URIRef):
        return f"<{path}>", str(path)
    inverse = graph.value(path, SH.inversePath)
    if isinstance(inverse, URIRef):
        return f"^<{inverse}>", f"^{inverse}"
    raise ShapesError(f"{prop}: only IRI and inverse paths are supported")


def _compile_property(graph: Graph, shape, prop, focus: str) -> list[Check]:
    unsupported = {p for p in graph.predicates(prop, None)} - PROPERTY_SHAPE_KEYS
    if unsupported:
        raise ShapesError(f"{shape}: constraint components {sorted(unsupported)} are not compiled")
    sparql_path, label = _path(graph, prop)
    message = str(graph.value(prop, SH.message) or f"constraint on {label} violated")
    severity = str(graph.value(prop, SH.severity) or SH.Violation).rsplit("#", 1)[-1]

    def check(query: str) -> Check:
        return Check(shape=str(shape), query=query, message=message, path=label, severity=severity)

    focus_nodes = f"{{ SELECT DISTINCT ?this WHERE {{ {focus} }} }}"
    checks = []
    min_count = graph.value(prop, SH.minCount)
    if min_count is not None:
        checks.append(check(f"SELECT ?this WHERE {{ {focus_nodes} OPTIONAL {{ ?this {sparql_path} ?v }} }} "
                            f"GROUP BY ?this HAVING (COUNT(DISTINCT ?v) < {int(min_count)})"))
    max_count = graph.value(prop, SH.maxCount)
    if max_count is not None:
        checks.append(check(f"SELECT ?this WHERE {{ {focus_nodes} ?this {sparql_path} ?v }} "
                            f"GROUP BY ?this HAVING (COUNT(DISTINCT ?v) > {int(max_count)})"))
    has_value = graph.value(prop, SH.hasValue)
    if has_value is not None:
        checks.append(check(f"SELECT DISTINCT ?this WHERE {{ {focus} FILTER NOT EXISTS {{ ?this {sparql_path} {has_value.n3()} }} }}"))
    conditions = [_value_condition(graph, prop, component) for component in VALUE_COMPONENTS if graph.value(prop, component) is not None]
    for condition in conditions:
        checks.append(check(f"SELECT DISTINCT ?this ?value WHERE {{ {focus} ?this {sparql_path} ?value . FILTER ({condition}) }}"))
    return checks


def _value_condition(graph: Graph, prop, component) -> str:
    """A SPARQL filter that is true for a value violating `component`."""
    value = graph.value(prop, component)
    if component == SH.datatype:
        return f"!isLiteral(?value) || datatype(?value) != <{value}>"
    if component == SH["class"]:
        return f"NOT EXISTS {{ ?value <{RDF.type}>/<http://www.w3.org/2000/01/rdf-schema#subClassOf>* <{value}> }}"
    if component == SH.nodeKind:
        if value != SH.IRI:
            raise ShapesError(f"{prop}: only sh:nodeKind sh:IRI is compiled")
        return "!isIRI(?value)"
    if component in COMPARATORS:
        return f"!COALESCE(?value {COMPARATORS[component]} {value.n3()}, false)"
    members = list(Collection(graph, value))
    return "!(" + " || ".join(f"sameTerm(?value, {m.n3()})" for m in members) + ")"


def _compile_closed(graph: Graph, shape, properties: list, focus: str) -> Check:
    allowed = {graph.value(p, SH.path) for p in properties} | set(Collection(graph, graph.value(shape, SH.ignoredProperties)))
    listed = ", ".join(f"<{p}>" for p in sorted(str(a) for a in allowed if isinstance(a, URIRef)))
    return Check(
        shape=str(shape),
        query=f"SELECT DISTINCT ?this ?path ?value WHERE {{ {focus} ?this ?path ?value . FILTER (?path NOT IN ({listed})) }}",
        message="property {?path} is not part of the gridtwin form of this class; remove it or see the shapes",
    )


def _compile_sparql(graph: Graph, shape, constraint, targets: list[str], prefixes: str) -> Check:
    select = str(graph.value(constraint, SH.select))
    typed = " ".join(f"<{t}>" for t in targets)
    # keep only targets: the query's own patterns bind $this; the VALUES restriction makes it exact
    query = prefixes + select.replace("WHERE {", f"WHERE {{ VALUES ?cls {{ {typed} }} $this a ?cls .", 1)
    return Check(shape=str(shape), query=query, message=str(graph.value(constraint, SH.message)))


# --- running ----------------------------------------------------------------------------------


def normalise_numbers(document: RdfDocument) -> RdfDocument:
    """Integer/decimal literals of double-valued properties become xsd:double (the same number).

    Lets people write `cim:Conductor.length 0.25` in Turtle; anything that is not a number stays as it
    is and fails its datatype constraint.
    """
    doubles = load_shapes().double_properties
    quads = []
    for quad in document.quads:
        obj = quad.object
        if isinstance(obj, ox.Literal) and quad.predicate.value in doubles and obj.datatype.value in NUMERIC_TYPES:
            with contextlib.suppress(ValueError):  # ill-formed: left for validate() to report
                obj = ox.Literal(repr(float(obj.value)), datatype=XSD_DOUBLE)
            quad = ox.Quad(quad.subject, quad.predicate, obj)
        quads.append(quad)
    return RdfDocument(quads)


def validate(document: RdfDocument, *, context: RdfDocument | None = None, focus_nodes: set[str] | None = None) -> ValidationReport:
    """Validate `document` (plus read-only `context`, e.g. stored neighbours) against the gridtwin shapes.

    With `focus_nodes` (IRIs or `_:id`), only those nodes are judged; the rest is their neighbourhood.
    """
    shapes = load_shapes()
    whole = document if context is None else document + context
    judged = focus_nodes if focus_nodes is not None else {term_key(s) for s in document.subjects}
    violations = _ill_formed_literals(document, judged) + _unknown_nodes(document, shapes, judged)
    store = whole.store
    for check in shapes.checks:
        for solution in store.query(check.query):
            this = term_key(solution["this"])
            if this in judged:
                violations.append(_violation(check, this, solution))
    return ValidationReport(sorted(violations, key=lambda v: (v.focus_node, v.path or "", v.message)))


def _violation(check: Check, this: str, solution) -> Violation:
    def fill(match: re.Match) -> str:
        term = solution[match.group(1)]
        return term.value if term is not None else match.group(0)

    value = solution["value"]
    found_path = solution["path"]
    return Violation(
        focus_node=this,
        message=PLACEHOLDER.sub(fill, check.message),
        severity=check.severity,
        path=found_path.value if found_path is not None else check.path,
        value=term_key(value) if value is not None else None,
        source_shape=check.shape,
    )


def _ill_formed_literals(document: RdfDocument, judged: set[str]) -> list[Violation]:
    violations = []
    for quad in document.quads:
        obj = quad.object
        parse = LEXICAL_CHECKS.get(obj.datatype.value) if isinstance(obj, ox.Literal) else None
        if parse is None:
            continue
        try:
            parse(obj.value)
        except (ValueError, KeyError):
            subject = term_key(quad.subject)
            if subject in judged:
                violations.append(Violation(focus_node=subject, path=quad.predicate.value, value=obj.value,
                                            message=f"{obj.value!r} is not a valid {obj.datatype.value.rsplit('#', 1)[-1]}",
                                            source_shape="gridtwin:WellFormedLiterals"))
    return violations


def _unknown_nodes(document: RdfDocument, shapes: Shapes, judged: set[str]) -> list[Violation]:
    rdf_type = str(RDF.type)
    typed = {term_key(q.subject) for q in document.quads if q.predicate.value == rdf_type and q.object.value in shapes.known_classes}
    return [
        Violation(focus_node=node, path=rdf_type, source_shape="gridtwin:KnownClasses",
                  message="this node has no type gridtwin knows; see the shapes for the accepted classes")
        for node in sorted(judged - typed)
    ]


def validate_graph(graph: Graph | RdfDocument) -> ValidationReport:
    """Validate a whole graph (rdflib or document) as an upload would be: numbers normalised, every node judged."""
    return validate(normalise_numbers(RdfDocument.from_graph(graph)))
