"""Load-flow round trip of every SimBench LV, MV and MV+LV grid (scenario 0, "sw") through the twin.

For each grid: SimBench net → RDF (`net_to_document`) → validate + store (`grid_import_graph`) →
pandapower net (`grid_to_net`) → `runpp`, next to `runpp` on the original net. Prints per grid the
size, the conversion seconds (to an RdfDocument, which the import uses, and to an rdflib Graph),
the import seconds and the largest differences on the original buses and branches:
|Δvm_pu| and |Δloading_percent| against the original with `tap_changer_type = "Ratio"` (what the
twin models), and — the plain approach — |Δvm_pu| against the raw SimBench net, whose taps
pandapower 3 ignores (simbench issue #69).

Run: `.venv/bin/python benchmarks/simbench_roundtrip.py [--codes CODE ...] [--no-db]`
(`--no-db`: graph → `graph_to_rows` → `rows_to_net`, no database; database as in _setup.py).
"""

import argparse
import copy
import time
from dataclasses import dataclass

import numpy as np
from _setup import setup_django

TOLERANCE_VM_PU = 1e-6
TOLERANCE_LOADING_PERCENT = 1e-4
SOLVER = {"lightsim2grid": False, "algorithm": "nr", "init": "dc", "calculate_voltage_angles": True, "tolerance_mva": 1e-9,
          "max_iteration": 30}


@dataclass
class Outcome:
    code: str
    buses: int
    assets: int
    convert_s: float
    graph_s: float
    import_s: float
    dvm_pu: float
    dloading_percent: float
    raw_dvm_pu: float

    @property
    def ok(self) -> bool:
        return self.dvm_pu < TOLERANCE_VM_PU and self.dloading_percent < TOLERANCE_LOADING_PERCENT


def simbench_codes() -> list[str]:
    """The LV (1-LV-*--0-sw), MV (1-MV-*--0-sw) and MV+LV (1-MVLV-*-0-sw) grids of scenario 0 with switches."""
    import simbench

    codes = simbench.collect_all_simbench_codes()
    return [c for c in codes if c.endswith("-0-sw") and c.startswith(("1-LV-", "1-MV-", "1-MVLV-"))]


def max_abs_difference(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    difference = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
    return float(np.nan_to_num(difference, nan=np.inf).max(initial=0.0))


def solved(net):
    import pandapower as pp

    net = copy.deepcopy(net)
    pp.runpp(net, **SOLVER)
    return net


def differences(original, twin, index, grid_iri: str) -> tuple[float, float]:
    """Max |Δvm_pu| over the original buses and max |Δloading_percent| over lines and transformers."""
    def twin_values(table, column, source_index):
        return twin[f"res_{table}"][column].loc[[index[table][f"{grid_iri}/{table}/{i}"] for i in source_index]]

    dvm = max_abs_difference(original.res_bus.vm_pu, twin_values("bus", "vm_pu", original.bus.index))
    dloading = max(
        max_abs_difference(original.res_line.loading_percent, twin_values("line", "loading_percent", original.line.index)),
        max_abs_difference(original.res_trafo.loading_percent, twin_values("trafo", "loading_percent", original.trafo.index)),
    )
    return dvm, dloading


def store_and_rebuild(document, grid_iri: str, participant):
    """Import the graph into the twin database and build the net back from it: (net, index, import seconds)."""
    from twin import models, services
    from twin.pandapower_adapter import grid_to_net

    models.Grid.objects.filter(iri=grid_iri).delete()
    start = time.perf_counter()
    result = services.grid_import_graph(graph=document, participant=participant, source=f"benchmark:{grid_iri}")
    seconds = time.perf_counter() - start
    net, index = grid_to_net(result.grid)
    result.grid.delete()
    return net, index, seconds


def rebuild_without_database(document):
    from twin.pandapower_adapter import rows_to_net
    from twin.rdf_codec import graph_to_rows

    start = time.perf_counter()
    rows = graph_to_rows(document)
    seconds = time.perf_counter() - start
    net, index = rows_to_net(rows)
    return net, index, seconds


def round_trip(code: str, *, base_iri: str, participant) -> Outcome:
    import simbench

    from ontology.converters.pandapower_net import net_to_document, net_to_graph

    raw = simbench.get_simbench_net(code)
    grid_iri = f"{base_iri}benchmark/simbench-roundtrip/{code}"  # not the IRI other benchmarks import the grid under
    grid = {"grid_iri": grid_iri, "grid_name": f"SimBench {code}", "owner_iri": participant.iri if participant else None}
    start = time.perf_counter()
    document = net_to_document(raw, **grid)
    convert_s = time.perf_counter() - start
    start = time.perf_counter()
    net_to_graph(raw, **grid)
    graph_s = time.perf_counter() - start
    if participant is None:
        twin, index, import_s = rebuild_without_database(document)
    else:
        twin, index, import_s = store_and_rebuild(document, grid_iri, participant)
    assets = sum(len(elements) for elements in index.elements.values())
    with_taps = copy.deepcopy(raw)
    with_taps.trafo["tap_changer_type"] = "Ratio"
    twin = solved(twin)
    dvm, dloading = differences(solved(with_taps), twin, index, grid_iri)
    raw_dvm, _ = differences(solved(raw), twin, index, grid_iri)
    return Outcome(code, len(raw.bus), assets, convert_s, graph_s, import_s, dvm, dloading, raw_dvm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codes", nargs="*", help="SimBench codes (default: every LV, MV and MV+LV grid, scenario 0, sw)")
    parser.add_argument("--no-db", action="store_true", help="graph → rows → net without the database")
    args = parser.parse_args()
    setup_django()
    from django.conf import settings

    from twin import services

    participant = None if args.no_db else services.participant_for_cli("Benchmark utility")
    codes = args.codes or simbench_codes()
    stage = "rows s" if args.no_db else "import s"
    print(f"{len(codes)} SimBench grids; {'no database' if args.no_db else 'through the twin database'}; "
          f"ok = |Δvm| < {TOLERANCE_VM_PU:g} pu and |Δloading| < {TOLERANCE_LOADING_PERCENT:g} %")
    print(f"{'code':<28} | {'buses':>6} | {'assets':>6} | {'convert s':>9} | {'graph s':>7} | {stage:>8} | {'max|Δvm_pu|':>11} | "
          f"{'max|Δload %|':>12} | {'raw SimBench Δvm':>16} | ok")
    outcomes = []
    for code in codes:
        o = round_trip(code, base_iri=settings.GRIDTWIN_BASE_IRI, participant=participant)
        outcomes.append(o)
        print(f"{o.code:<28} | {o.buses:>6} | {o.assets:>6} | {o.convert_s:>9.2f} | {o.graph_s:>7.2f} | {o.import_s:>8.2f} | "
              f"{o.dvm_pu:>11.1e} | {o.dloading_percent:>12.1e} | {o.raw_dvm_pu:>16.1e} | {'yes' if o.ok else 'NO'}", flush=True)
    failed = [o.code for o in outcomes if not o.ok]
    summary = f"{len(outcomes) - len(failed)}/{len(outcomes)} grids reproduce pandapower's load flow"
    print(summary + (f"; failed: {failed}" if failed else ""))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
