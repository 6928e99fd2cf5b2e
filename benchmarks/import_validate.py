"""Import of a large SimBench grid: parse + validate + store, next to plain pyshacl on the same graph.

Prints, for SimBench 1-MVLV-urban-all-0-sw (≈10k buses, ≈25k assets):
  * end to end: Turtle bytes → parse → SHACL → rows → PostgreSQL, seconds per stage;
  * plain `pyshacl.validate` of the same graph with the same shapes on an in-memory rdflib Graph;
  * re-validation after a small change (one feeder's worth, ~100 assets) through the change path,
    next to validating the whole changed graph again.
Run: `.venv/bin/python benchmarks/import_validate.py [--code CODE] [--skip-plain]`
"""

import argparse
import time

from _setup import setup_django


def timed(label: str, fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"  {label:<48} {seconds:8.2f} s", flush=True)
    return value, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", default="1-MVLV-urban-all-0-sw")
    parser.add_argument("--skip-plain", action="store_true", help="skip the (slow) plain pyshacl baseline")
    parser.add_argument("--change-size", type=int, default=100)
    parser.add_argument("--plain-timeout", type=float, default=1800, help="seconds the plain pyshacl run may take")
    args = parser.parse_args()
    setup_django()

    from django.conf import settings

    from ontology.converters.pandapower_net import simbench_document
    from ontology.parsing import parse_rdf
    from ontology.serialization import serialize
    from ontology.validation import validate_graph
    from twin import models, services

    print(f"SimBench {args.code}")
    graph, _ = timed("convert net → RDF (incl. reading SimBench CSVs)", simbench_document, args.code, base_iri=settings.GRIDTWIN_BASE_IRI)
    turtle = serialize(graph, "turtle")
    print(f"  {len(graph)} triples, {len(turtle) / 1e6:.1f} MB of Turtle")
    models.Grid.objects.filter(iri__contains=args.code).delete()
    participant = services.participant_for_cli("Benchmark utility")

    print("gridtwin, end to end")
    parsed, t_parse = timed("parse (pyoxigraph, hostile-input checks)", parse_rdf, turtle, "text/turtle",
                            max_bytes=10**9, max_literal_chars=65536)
    report, t_validate = timed("validate (shapes compiled to SPARQL, Oxigraph)", validate_graph, parsed)
    assert report.conforms, report.violations[:3]
    result, t_import = timed("validate + store (grid_import_graph)", services.grid_import_graph,
                             graph=parse_rdf(turtle, "text/turtle", max_bytes=10**9, max_literal_chars=65536), participant=participant)
    counts = {k: v["created"] for k, v in result.counts.items() if v["created"]}
    print(f"  stored: {sum(counts.values())} rows {counts}")
    end_to_end = t_parse + t_import
    print(f"  {'END TO END (parse + validate + store)':<48} {end_to_end:8.2f} s   goal < 60 s")

    if not args.skip_plain:
        plain_pyshacl(parsed, t_validate, args.plain_timeout, timed)

    small_change(result.grid, args.change_size, timed)


def plain_pyshacl(document, t_validate: float, timeout_s: float, timed) -> None:
    """pyshacl.validate of the same graph with the same shapes, in a child process stopped after `timeout_s`."""
    import multiprocessing

    from rdflib import Graph

    from ontology.validation import SHAPES_PATH

    print("plain approach: pyshacl.validate(graph, shacl_graph=shapes) on an in-memory rdflib Graph")
    plain_graph, _ = timed("build the rdflib Graph pyshacl needs", document.to_graph)
    shapes = Graph().parse(SHAPES_PATH)

    def run(pipe) -> None:
        import pyshacl

        start = time.perf_counter()
        conforms, _, _ = pyshacl.validate(plain_graph, shacl_graph=shapes, inference="none", advanced=True)
        pipe.send((conforms, time.perf_counter() - start))

    receiver, sender = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=run, args=(sender,))
    child.start()
    if receiver.poll(timeout_s):
        conforms, t_plain = receiver.recv()
        print(f"  {'pyshacl.validate, all shapes':<48} {t_plain:8.2f} s   conforms={conforms}")
        print(f"  ratio plain pyshacl / gridtwin validation = {t_plain / t_validate:.1f}×")
    else:
        print(f"  pyshacl.validate did not finish within {timeout_s:.0f} s: ratio > {timeout_s / t_validate:.0f}× (lower bound)")
    child.kill()
    child.join()


def small_change(grid, size: int, timed) -> None:
    """Re-validate a feeder-sized change (`size` loads edited) through the change path."""
    from rdflib import Graph, Literal
    from rdflib.namespace import XSD

    from ontology.namespaces import CIM
    from ontology.validation import validate_graph
    from twin import selectors, services

    full = selectors.grid_graph(grid)
    change = Graph()
    loads = sorted(full.subjects(CIM["EnergyConsumer.p"], None))[:size]
    for load in loads:
        for triple in full.triples((load, None, None)):
            change.add(triple)
        for terminal in full.subjects(CIM["Terminal.ConductingEquipment"], load):
            for triple in full.triples((terminal, None, None)):
                change.add(triple)
        change.set((load, CIM["EnergyConsumer.p"], Literal(0.0042, datatype=XSD.double)))
    print(f"small change: {len(loads)} loads ({len(change)} triples) into the stored grid")
    result, t_change = timed("validate + store the change (grid_apply_changes)", services.grid_apply_changes, grid=grid, graph=change)
    print(f"  updated: {result.counts['Load']['updated']} loads   goal < 2 s")
    for triple in change.triples((None, CIM["EnergyConsumer.p"], None)):
        full.set(triple)
    _, t_full = timed("plain: re-validate the whole changed grid", validate_graph, full)
    print(f"  ratio whole-grid re-validation / change validation = {t_full / t_change:.1f}×")


if __name__ == "__main__":
    main()
