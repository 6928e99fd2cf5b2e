"""SHACL validation of grid graphs against the gridtwin shapes.

One shapes file, two engines: SHACL Core constraints run in pyshacl; the SHACL-SPARQL constraints
(cross-node rules) run once over the whole graph in pyoxigraph instead of once per focus node, which
is what makes a 25k-asset grid validate in seconds (see FIELD-NOTES: 5 ms per asset in pyshacl vs
~100 ms per query in total). Every shape query binds $this in a triple pattern, so unbinding it and
keeping the rows whose $this is a target gives exactly the per-focus-node result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pyoxigraph as ox
import pyshacl
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import RDF, SH, XSD

from ontology.serialization import ox_triples

SHAPES_PATH = Path(__file__).parent / "shapes" / "gridtwin-shapes.ttl"
PLACEHOLDER = re.compile(r"\{[?$](\w+)\}")


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
        return {
            "focus_node": self.focus_node,
            "path": self.path,
            "value": self.value,
            "message": self.message,
            "severity": self.severity,
            "source_shape": self.source_shape,
        }


@dataclass
class ValidationReport:
    """The verdict on a graph: conforms when no result has severity Violation."""

    violations: list[Violation] = field(default_factory=list)

    @property
    def conforms(self) -> bool:
        return not any(v.severity == "Violation" for v in self.violations)

    def as_graph(self) -> Graph:
        """The report as a SHACL ValidationReport graph."""
        graph = Graph()
        graph.bind("sh", SH)
        report = BNode()
        graph.add((report, RDF.type, SH.ValidationReport))
        graph.add((report, SH.conforms, Literal(self.conforms)))
        for v in self.violations:
            result = BNode()
            graph.add((report, SH.result, result))
            graph.add((result, RDF.type, SH.ValidationResult))
            graph.add((result, SH.focusNode, _term(v.focus_node)))
            graph.add((result, SH.resultMessage, Literal(v.message)))
            graph.add((result, SH.resultSeverity, SH[v.severity]))
            if v.path:
                graph.add((result, SH.resultPath, URIRef(v.path) if not v.path.startswith("^") else Literal(v.path)))
            if v.value is not None:
                graph.add((result, SH.value, Literal(v.value)))
            if v.source_shape:
                graph.add((result, SH.sourceShape, _term(v.source_shape)))
        return graph

    def as_turtle(self) -> str:
        return self.as_graph().serialize(format="turtle")


def _term(value: str):
    return BNode(value[2:]) if value.startswith("_:") else URIRef(value)


@dataclass(frozen=True)
class SparqlConstraint:
    """A SHACL-SPARQL constraint of a node shape, ready to run over a whole graph."""

    shape: str
    target_classes: tuple[str, ...]
    query: str
    message: str


@dataclass(frozen=True)
class Shapes:
    """The parsed shapes: a core-only graph for pyshacl and the SPARQL constraints for pyoxigraph."""

    core: Graph
    sparql: tuple[SparqlConstraint, ...]
    known_classes: frozenset
    double_properties: frozenset


@lru_cache(maxsize=1)
def load_shapes(path: Path = SHAPES_PATH) -> Shapes:
    """Parse the shapes file once per process."""
    graph = Graph()
    graph.parse(path, format="turtle")
    prefixes = "".join(
        f"PREFIX {graph.value(d, SH.prefix)}: <{graph.value(d, SH.namespace)}>\n" for d in graph.objects(None, SH.declare)
    )
    constraints = []
    for shape, constraint in graph.subject_objects(SH.sparql):
        targets = tuple(sorted(str(c) for c in graph.objects(shape, SH.targetClass)))
        constraints.append(
            SparqlConstraint(
                shape=str(shape),
                target_classes=targets,
                query=prefixes + str(graph.value(constraint, SH.select)),
                message=str(graph.value(constraint, SH.message)),
            )
        )
    core = Graph()
    for triple in graph:
        if triple[1] != SH.sparql:
            core.add(triple)
    known = frozenset(graph.objects(None, SH.targetClass))
    doubles = frozenset(
        path for prop in graph.subjects(SH.datatype, XSD.double) if isinstance(path := graph.value(prop, SH.path), URIRef)
    )
    return Shapes(core=core, sparql=tuple(sorted(constraints, key=lambda c: c.shape)), known_classes=known, double_properties=doubles)


NUMERIC_TYPES = {XSD.integer, XSD.decimal, XSD.float, XSD.int, XSD.long, XSD.short}


def normalise_numbers(graph: Graph) -> None:
    """Turn integer/decimal literals of double-valued properties into xsd:double (the same number).

    Lets people write `cim:Conductor.length 0.25` in Turtle; anything that is not a number stays as
    it is and fails its datatype constraint.
    """
    doubles = load_shapes().double_properties
    changes = [
        (s, p, o)
        for s, p, o in graph
        if p in doubles and isinstance(o, Literal) and o.datatype in NUMERIC_TYPES and o.value is not None
    ]
    for s, p, o in changes:
        graph.remove((s, p, o))
        graph.add((s, p, Literal(float(o.value), datatype=XSD.double)))


def validate_graph(data: Graph, *, context: Graph | None = None, focus_nodes: set | None = None) -> ValidationReport:
    """Validate `data` (plus read-only `context`, e.g. stored neighbours) against the gridtwin shapes.

    With `focus_nodes`, only those nodes are judged (the rest only serves as their neighbourhood).
    """
    shapes = load_shapes()
    graph = data if context is None else data + context
    report = ValidationReport()
    report.violations += _unknown_nodes(data, shapes, focus_nodes)
    report.violations += _core(graph, shapes, focus_nodes)
    report.violations += _sparql(graph, shapes, focus_nodes)
    return report


def _unknown_nodes(data: Graph, shapes: Shapes, focus_nodes: set | None) -> list[Violation]:
    typed = {s for s, o in data.subject_objects(RDF.type) if o in shapes.known_classes}
    subjects = set(data.subjects()) if focus_nodes is None else set(focus_nodes)
    return [
        Violation(focus_node=_n3(s), message="this node has no type gridtwin knows; see the shapes for the accepted classes",
                  path=str(RDF.type), source_shape="gridtwin:KnownClasses")
        for s in sorted(subjects - typed)
    ]


def _core(graph: Graph, shapes: Shapes, focus_nodes: set | None) -> list[Violation]:
    kwargs = {"focus_nodes": sorted(focus_nodes)} if focus_nodes is not None else {}
    if focus_nodes is not None and not focus_nodes:
        return []
    _, results, _ = pyshacl.validate(
        graph, shacl_graph=shapes.core, inference="none", advanced=False, meta_shacl=False, allow_warnings=True, **kwargs
    )
    violations = []
    for result in results.subjects(RDF.type, SH.ValidationResult):
        path = results.value(result, SH.resultPath)
        if isinstance(path, BNode):
            inverse = results.value(path, SH.inversePath)
            path = f"^{inverse}" if inverse is not None else None
        value = results.value(result, SH.value)
        shape = results.value(result, SH.sourceShape)
        message = str(results.value(result, SH.resultMessage) or "constraint violated")
        if results.value(result, SH.sourceConstraintComponent) == SH.ClosedConstraintComponent:
            message = f"property {path} is not part of the gridtwin form of this class; remove it or see the shapes"
        violations.append(
            Violation(
                focus_node=_n3(results.value(result, SH.focusNode)),
                message=message,
                severity=str(results.value(result, SH.resultSeverity)).rsplit("#", 1)[-1],
                path=str(path) if path is not None else None,
                value=str(value) if value is not None else None,
                source_shape=str(shape) if isinstance(shape, URIRef) else None,
            )
        )
    return sorted(violations, key=lambda v: (v.focus_node, v.path or "", v.message))


def _sparql(graph: Graph, shapes: Shapes, focus_nodes: set | None) -> list[Violation]:
    store = ox.Store()
    store.bulk_extend(ox.Quad(t.subject, t.predicate, t.object) for t in ox_triples(graph))
    violations = []
    for constraint in shapes.sparql:
        targets = {s for cls in constraint.target_classes for s in graph.subjects(RDF.type, URIRef(cls))}
        if focus_nodes is not None:
            targets &= set(focus_nodes)
        if not targets:
            continue
        for solution in store.query(constraint.query):
            this = _rdflib_node(solution["this"])
            if this not in targets:
                continue
            violations.append(_sparql_violation(constraint, this, solution))
    return violations


def _sparql_violation(constraint: SparqlConstraint, this, solution) -> Violation:
    def fill(match: re.Match) -> str:
        term = solution[match.group(1)]
        return term.value if term is not None else match.group(0)

    value = solution["value"]
    return Violation(
        focus_node=_n3(this),
        message=PLACEHOLDER.sub(fill, constraint.message),
        value=value.value if value is not None else None,
        source_shape=constraint.shape,
    )


def _rdflib_node(term):
    return URIRef(term.value) if isinstance(term, ox.NamedNode) else BNode(term.value)


def _n3(node) -> str | None:
    if node is None:
        return None
    return f"_:{node}" if isinstance(node, BNode) else str(node)
