"""SHACL validation of data-sharing agreements (ODRL 2.2 policies) against the gridtwin ODRL profile.

The shapes (`shapes/odrl-gridtwin-shapes.ttl`) are the single statement of what a valid agreement is;
the profile's terms are documented in `vocabulary/gridtwin-odrl-profile.ttl`. A policy is a few
dozen triples, so plain pyshacl is fast enough here; the grid engine of `ontology.validation` is for
whole grids and loads only the grid shapes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pyshacl
from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.collection import Collection
from rdflib.namespace import RDF, SH

from ontology.validation import Violation

ODRL = Namespace("http://www.w3.org/ns/odrl/2/")
DPV = Namespace("https://w3id.org/dpv#")
PROFILE = URIRef("https://w3id.org/gridtwin/odrl-profile")
ODRL_SHAPES_PATH = Path(__file__).parent / "shapes" / "odrl-gridtwin-shapes.ttl"


@lru_cache(maxsize=1)
def load_policy_shapes() -> Graph:
    """The profile's shapes graph, parsed once per process."""
    return Graph().parse(ODRL_SHAPES_PATH, format="turtle")


def validate_policy(graph: Graph) -> list[Violation]:
    """The violations of a policy graph against the gridtwin ODRL profile; empty when it conforms.

    A rule that judges a node through `sh:node` reports, for each part at fault, that part's node, path and value
    with the rule's message (instead of pyshacl's outer result plus its generic `sh:detail` results).
    """
    shapes = load_policy_shapes()
    _, report, _ = pyshacl.validate(graph, shacl_graph=shapes, inference="none", advanced=False, inplace=True, do_owl_imports=False)
    violations = []
    for result in report.objects(report.value(None, RDF.type, SH.ValidationReport), SH.result):
        message = str(report.value(result, SH.resultMessage) or "constraint violated")
        source_shape = _named_shape(shapes, report.value(result, SH.sourceShape))
        violations += [_violation(report, part, message, source_shape) for part in _leaf_details(report, result)]
    distinct = {tuple(v.as_dict().values()): v for v in violations}
    return sorted(distinct.values(), key=lambda v: (v.focus_node, v.path or "", v.message, v.value or ""))


def _leaf_details(report: Graph, result) -> list:
    """The innermost results under a result's `sh:detail` (the result itself when it has none)."""
    details = list(report.objects(result, SH.detail))
    return [leaf for detail in details for leaf in _leaf_details(report, detail)] if details else [result]


def _violation(report: Graph, result, message: str, source_shape: str | None) -> Violation:
    value = report.value(result, SH.value)
    return Violation(
        focus_node=node_key(report.value(result, SH.focusNode)),
        message=message,
        severity=str(report.value(result, SH.resultSeverity) or SH.Violation).rsplit("#", 1)[-1],
        path=_path_text(report, report.value(result, SH.resultPath)),
        value=node_key(value) if value is not None else None,
        source_shape=source_shape,
    )


def node_key(term) -> str:
    """A node as a string: the IRI, `_:id` for a blank node, the lexical form of a literal."""
    return f"_:{term}" if isinstance(term, BNode) else str(term)


def _path_text(report: Graph, path) -> str | None:
    """A result path as text: an IRI, `^iri` for an inverse path, or a sequence path in SPARQL syntax (`<a>/^<b>`)."""
    if path is None or isinstance(path, URIRef):
        return str(path) if path is not None else None
    inverse = report.value(path, SH.inversePath)
    if inverse is not None:
        return f"^{inverse}"
    steps = Collection(report, path)
    return "/".join(f"<{step}>" if isinstance(step, URIRef) else f"^<{report.value(step, SH.inversePath)}>" for step in steps)


def _named_shape(shapes: Graph, shape) -> str | None:
    """The IRI of the shape a result came from, or of the named shape an anonymous property shape belongs to."""
    while isinstance(shape, BNode):
        shape = shapes.value(None, SH.property, shape)
    return str(shape) if shape is not None and not isinstance(shape, Literal) else None
