"""Which of pandapower's example networks (`pandapower.networks`) the twin imports, and whether they solve alike.

Lists every network function of `pandapower.networks` that builds without arguments and without downloads (plus the
CIGRE MV variants with DER), and takes each through the twin's path: `net_to_graph` (pandapower → RDF) → SHACL
validation + `twin.rdf_codec` + store (`grid_import_graph`) → `twin.pandapower_adapter.grid_to_net` → `runpp`, next
to `runpp` on the original net with the same options. Prints per network the buses, the elements (rows of the
element tables), the seconds of the twin's import (convert + validate/store + rebuild), pandapower's own
`to_json`/`from_json` round trip of the same net in the same run and the ratio of the two, and either the largest
|Δvm_pu| and |Δva_degree| over the original buses or the reason the twin refused the network (the table/class and
node named) — ok = |Δvm| < 1e-6 pu. The twin's net is solved to the original's mismatch in MVA (pandapower applies
tolerance_mva in per unit of sn_mva, 1 MVA in the twin's net).

Measured: 61/62 import, 60 agree (GBnetwork 1.9e-12 pu). Not agreeing: case11_iwamoto (imports; Iwamoto & Tamura's
ill-conditioned case, no solution pandapower finds: no reference) and ieee_european_lv_asymmetric (asymmetric_load,
an element the balanced twin does not hold: refused by name).

Run: `.venv/bin/python benchmarks/pandapower_networks.py [--networks NAME ...] [--max-buses N] [--keep]`
(a private database: BENCH_DATABASE_URL with `_ppnets` appended, dropped at the end unless `--keep`).
"""

import argparse
import contextlib
import copy
import functools
import inspect
import io
import time
import warnings
from dataclasses import dataclass

import numpy as np
from _setup import run_on_private_database

TOLERANCE_VM_PU = 1e-6
SOLVER = {"lightsim2grid": False, "algorithm": "nr", "init": "dc", "calculate_voltage_angles": True, "tolerance_mva": 1e-9,
          "max_iteration": 30}
VARIANTS = {  # networks worth importing with arguments: CIGRE MV with its distributed energy resources
    "create_cigre_network_mv(with_der='pv_wind')": ("create_cigre_network_mv", {"with_der": "pv_wind"}),
    "create_cigre_network_mv(with_der='all')": ("create_cigre_network_mv", {"with_der": "all"}),
}


@dataclass
class Outcome:
    name: str
    buses: int = 0
    elements: int = 0
    import_s: float = float("nan")
    json_s: float = float("nan")
    dvm_pu: float = float("nan")
    dva_degree: float = float("nan")
    refused: str = ""
    options: dict | None = None
    imported: bool = False

    @property
    def ok(self) -> bool:
        return not self.refused and self.dvm_pu < TOLERANCE_VM_PU


def network_builders() -> dict:
    """name → zero-argument builder of every network function of pandapower.networks (and the VARIANTS)."""
    import pandapower.networks as pn

    builders = {}
    for name, function in sorted(inspect.getmembers(pn, inspect.isfunction)):
        if not function.__module__.startswith("pandapower.networks") or name.startswith("_"):
            continue
        parameters = inspect.signature(function).parameters.values()
        if all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
            builders[name] = function
    for label, (name, kwargs) in VARIANTS.items():
        builders[label] = functools.partial(getattr(pn, name), **kwargs)
    return builders


def build(builder):
    """The net a builder returns (its chatter silenced), or None when it is no network (e.g. a set of names)."""
    import pandapower as pp

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        net = builder()
    return net if isinstance(net, pp.pandapowerNet) else None


def element_count(net) -> int:
    import pandas as pd

    skip = ("res_", "_", "bus", "poly_cost", "pwl_cost", "std_types")
    return sum(len(t) for k, t in net.items() if isinstance(t, pd.DataFrame) and not k.startswith(skip))


def json_round_trip_seconds(net) -> float:
    import pandapower as pp

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.from_json_string(pp.to_json(net))
    return time.perf_counter() - start


def solved(net, **options):
    import pandapower as pp

    net = copy.deepcopy(net)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        pp.runpp(net, **{**SOLVER, **options})
    return net


FALLBACKS = ({}, {"tolerance_mva": 1e-8}, {"algorithm": "iwamoto_nr", "tolerance_mva": 1e-8})


def solved_original(net):
    """The original solved with SOLVER (Newton–Raphson to 1e-9 MVA) or, where pandapower does not converge so, its default
    1e-8 MVA (the 6,000-bus RTE cases stall below), then its Iwamoto-damped NR: (solved net, options used); None when
    pandapower solves it with none of them (case11_iwamoto has no solution pandapower finds)."""
    import pandapower as pp

    for options in FALLBACKS:
        try:
            return solved(net, **options), options
        except pp.LoadflowNotConverged:
            continue
    return None


def max_abs_difference(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    difference = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
    return float(np.nan_to_num(difference, nan=np.inf).max(initial=0.0))


def refusal(exc: Exception) -> str:
    """What the twin said: the first shape violation (node and message) or the error's node and message."""
    report = getattr(exc, "report", None)
    if report is not None and report.violations:
        first = report.violations[0]
        return f"{type(exc).__name__}: {first.focus_node}: {first.message} ({report.violation_count} violation(s))"
    return f"{type(exc).__name__}: {exc}"


def import_through_twin(net, grid_iri: str, participant):
    """net → RDF → validate + store → net; (rebuilt net, NetIndex, seconds)."""
    from ontology.converters.pandapower_net import net_to_graph
    from twin import models, services
    from twin.pandapower_adapter import grid_to_net

    models.Grid.objects.filter(iri=grid_iri).delete()
    start = time.perf_counter()
    graph = net_to_graph(net, grid_iri=grid_iri, grid_name=grid_iri.rsplit("/", 1)[-1], owner_iri=participant.iri)
    result = services.grid_import_graph(graph=graph, participant=participant, source=f"benchmark:{grid_iri}")
    twin, index = grid_to_net(result.grid)
    seconds = time.perf_counter() - start
    result.grid.delete()
    return twin, index, seconds


def run_one(name: str, builder, *, base_iri: str, participant, max_buses: int | None) -> Outcome | None:
    try:
        net = build(builder)
    except Exception as exc:  # a network that needs a download or fails to build is listed, not imported
        return Outcome(name, refused=f"not built here: {type(exc).__name__}: {str(exc)[:120]}")
    if net is None:
        return None
    outcome = Outcome(name, buses=len(net.bus), elements=element_count(net))
    if max_buses is not None and len(net.bus) > max_buses:
        outcome.refused = f"skipped: more than {max_buses} buses (--max-buses)"
        return outcome
    outcome.json_s = json_round_trip_seconds(net)
    grid_iri = f"{base_iri}benchmark/pandapower-networks/{''.join(c if c.isalnum() else '-' for c in name).strip('-')}"
    try:
        twin, index, outcome.import_s = import_through_twin(net, grid_iri, participant)
    except Exception as exc:  # the refusal is the figure
        outcome.refused = refusal(exc)
        return outcome
    outcome.imported = True
    reference = solved_original(net)
    if reference is None:
        outcome.refused = "no reference: pandapower.runpp does not converge on the original net (NR, Iwamoto NR)"
        return outcome
    original, outcome.options = reference
    # pandapower's tolerance_mva is applied in per unit of the net's sn_mva: the twin's net has sn_mva = 1, so the original's
    # test (GBnetwork: 1e-9 pu of 100 MVA) becomes 1e-7 there, the same mismatch in MVA (1e-9 on 1 MVA stalls on rounding)
    tolerance_mva = outcome.options.get("tolerance_mva", SOLVER["tolerance_mva"]) * net.sn_mva / twin.sn_mva
    try:
        twin = solved(twin, **{**outcome.options, "tolerance_mva": tolerance_mva})
    except Exception as exc:
        outcome.refused = f"load flow of the twin's net: {type(exc).__name__}: {exc}"
        return outcome
    buses = [index["bus"][f"{grid_iri}/bus/{i}"] for i in net.bus.index]
    outcome.dvm_pu = max_abs_difference(original.res_bus.vm_pu, twin.res_bus.vm_pu.loc[buses])
    outcome.dva_degree = max_abs_difference(original.res_bus.va_degree, twin.res_bus.va_degree.loc[buses])
    return outcome


def run(args) -> None:
    from django.conf import settings

    from twin import services

    participant = services.participant_for_cli("Benchmark utility")
    builders = network_builders()
    names = args.networks or list(builders)
    print(f"{len(names)} pandapower networks through the twin (net_to_graph → SHACL → codec → store → grid_to_net → runpp); "
          f"ok = max|Δvm| < {TOLERANCE_VM_PU:g} pu")
    print(f"{'network':<46} | {'buses':>5} | {'elements':>8} | {'import s':>8} | {'json s':>7} | {'ratio':>6} | "
          f"{'max|Δvm_pu|':>11} | {'max|Δva°|':>9} | result")
    outcomes = []
    for name in names:
        o = run_one(name, builders[name], base_iri=settings.GRIDTWIN_BASE_IRI, participant=participant, max_buses=args.max_buses)
        if o is None:
            continue
        outcomes.append(o)
        result = ("ok" + (f" {o.options}" if o.options else "")) if o.ok else (o.refused or "DIFFERS")
        print(f"{o.name:<46} | {o.buses:>5} | {o.elements:>8} | {o.import_s:>8.2f} | {o.json_s:>7.2f} | {o.import_s / o.json_s:>6.1f} | "
              f"{o.dvm_pu:>11.1e} | {o.dva_degree:>9.1e} | {result}", flush=True)
    imported = [o for o in outcomes if o.imported]
    agreeing = [o for o in imported if o.ok]
    ratios = [o.import_s / o.json_s for o in imported]
    ratio = f"; twin import / pandapower JSON round trip: median {np.median(ratios):.1f}×" if ratios else ""
    print(f"{len(imported)}/{len(outcomes)} networks import, {len(agreeing)} agree with pandapower.runpp "
          f"(max|Δvm| < {TOLERANCE_VM_PU:g} pu){ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="*", help="network function names (default: all, plus the CIGRE MV DER variants)")
    parser.add_argument("--max-buses", type=int, help="skip networks with more buses than this")
    parser.add_argument("--keep", action="store_true", help="keep the private database")
    args = parser.parse_args()
    run_on_private_database("ppnets", run, args, keep=args.keep)


if __name__ == "__main__":
    main()
