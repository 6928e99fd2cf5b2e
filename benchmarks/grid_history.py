"""What a grid's history costs: recording a version, building a run's model from it, diffing two versions.

Prints, for SimBench 1-MVLV-urban-all-0-sw (≈10k buses, ≈25k assets) stored in PostgreSQL:
  * recording a version (canonical content from the database, SHA-256, zlib) next to the plain way of keeping a
    version exactly: the grid's RDF (the export) as compressed N-Triples; seconds and stored bytes;
  * a run's model built from its version's content (`content_net`) next to building it from the live rows
    (`grid_to_net`, what the cache was keyed by `grid_version` for);
  * the diff of two versions (a feeder-sized change) from their contents, next to diffing their N-Triples;
  * a feeder-sized change through `grid_apply_changes`, version recorded, and the share the record takes.
Run: `.venv/bin/python benchmarks/grid_history.py [--code CODE] [--change-size N]`
"""

import argparse
import zlib

from _setup import setup_django
from import_validate import timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", default="1-MVLV-urban-all-0-sw")
    parser.add_argument("--change-size", type=int, default=100)
    args = parser.parse_args()
    setup_django()

    from django.conf import settings
    from rdflib import Graph, Literal
    from rdflib.namespace import XSD

    from ontology.converters.pandapower_net import simbench_document
    from ontology.namespaces import CIM
    from ontology.serialization import serialize
    from twin import history, models, selectors, services
    from twin.pandapower_adapter import grid_to_net

    print(f"SimBench {args.code}")
    document = simbench_document(args.code, base_iri=settings.GRIDTWIN_BASE_IRI)
    models.LoadFlowRun.objects.filter(grid__iri__contains=args.code).delete()
    models.Grid.objects.filter(iri__contains=args.code).delete()
    participant = services.participant_for_cli("Benchmark utility")
    result, _ = timed("import (validate + store + version 1)", services.grid_import_graph, graph=document, participant=participant)
    grid = result.grid
    rows = sum(len(r) for r in selectors.grid_rows(grid)[1].values())
    print(f"  {rows} rows")

    print("recording a version")
    content, t_content = timed("gridtwin: canonical content from the database", history.grid_content, grid)
    _, t_hash = timed("gridtwin: SHA-256 of the content", history.content_hash, content)
    packed, t_pack = timed("gridtwin: zlib of the content", history.snapshot_pack, content)
    t_record = t_content + t_hash + t_pack
    graph, t_graph = timed("plain: the grid's RDF graph (as the export builds it)", selectors.grid_graph, grid)
    ntriples, t_nt = timed("plain: N-Triples of it", serialize, graph, "nt")
    plain_packed, t_zip = timed("plain: zlib of the N-Triples", zlib.compress, ntriples, 6)
    t_plain = t_graph + t_nt + t_zip
    print(f"  gridtwin {t_record:.3f} s, {len(packed) / 1e6:.2f} MB; plain {t_plain:.3f} s, {len(plain_packed) / 1e6:.2f} MB: "
          f"ratio plain / gridtwin = {t_plain / t_record:.1f}× time, {len(plain_packed) / len(packed):.1f}× bytes")

    print("a run's model")
    version = grid.versions.latest("number")
    (_, _), t_version_net = timed("gridtwin: content_net(version content) (cache miss)",
                                  lambda: history.content_net(history.snapshot_unpack(version.snapshot)))
    (_, _), t_db_net = timed("plain: grid_to_net(grid) from the live rows", grid_to_net, grid)
    print(f"  ratio live rows / version content = {t_db_net / t_version_net:.2f}×")

    print(f"a change of {args.change_size} loads, recorded as version 2")
    change = Graph()
    loads = sorted(graph.subjects(CIM["EnergyConsumer.p"], None))[: args.change_size]
    for load in loads:
        for triple in graph.triples((load, None, None)):
            change.add(triple)
        for terminal in graph.subjects(CIM["Terminal.ConductingEquipment"], load):
            for triple in graph.triples((terminal, None, None)):
                change.add(triple)
        change.set((load, CIM["EnergyConsumer.p"], Literal(0.0042, datatype=XSD.double)))
    _, t_change = timed("grid_apply_changes (validate + store + record)", services.grid_apply_changes, grid=grid, graph=change)
    print(f"  the record's share of the change: {t_record / t_change:.0%}")
    diff, t_diff = timed("gridtwin: diff of the two versions' contents", history.versions_diff, grid, 1, 2)
    print(f"  {diff['counts']}")
    after = serialize(selectors.grid_graph(grid), "nt")

    def plain_diff():
        old, new = set(ntriples.splitlines()), set(after.splitlines())
        return len(new - old), len(old - new)

    (added, removed), t_plain_diff = timed("plain: set difference of the two N-Triples (no assets, no fields)", plain_diff)
    print(f"  plain: +{added} −{removed} triples; ratio plain / gridtwin = {t_plain_diff / t_diff:.1f}×")


if __name__ == "__main__":
    main()
