"""CGMES samples through the twin: conversion time, size, and the twin load flow against the SV profile.

For each cimpy sample model (CIGRE MV from NEPLAN; Sample_Grid_Switches bus-branch and node-breaker
from PowerFactory) prints buses, assets, the seconds `cgmes_to_graph` takes (best of --repeat), and,
where the SV profile has voltages, the largest deviation of the twin's pandapower load flow from
them. Angles are compared without transformer phase shifts (NEPLAN's SV leaves the Dyn5 shift out);
the column "Δva shifted" shows what applying them does. Each import is rolled back.
Run: `.venv/bin/python benchmarks/cgmes_sv_check.py [--repeat N]`
"""

import argparse
import time
from pathlib import Path

from _setup import setup_django

SAMPLE_DIRS = {
    "CIGRE_MV": ("CIGRE_MV",),
    "Switches bus-branch": ("Sample_Grid_Switches", "Bus-Branch"),
    "Switches node-breaker": ("Sample_Grid_Switches", "Node-Breaker"),
}


class Rollback(Exception):
    """Raised to undo a benchmark import."""


def best_seconds(fn, repeat: int):
    """(result, best wall time in seconds) of `repeat` calls."""
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return value, best


def check_sample(label: str, paths: list[Path], participant, repeat: int) -> None:
    from django.db import transaction

    from ontology.converters.cgmes import cgmes_to_graph
    from twin.services import grid_import_graph
    from twin.sv_comparison import sv_deviation

    graph, seconds = best_seconds(lambda: cgmes_to_graph(paths, owner_iri=participant.iri), repeat)
    try:
        with transaction.atomic():
            result = grid_import_graph(graph=graph, participant=participant, source=f"benchmark:{label}")
            created = {name: counts["created"] for name, counts in result.counts.items()}
            assets = sum(created.values()) - created["Bus"] - created["BaseVoltage"] - created["Feeder"]
            plain = sv_deviation(result.grid, calculate_voltage_angles=False)
            shifted = sv_deviation(result.grid, calculate_voltage_angles=True)
            raise Rollback
    except Rollback:
        pass
    sv = f"{plain[0]:12.2e} {plain[1]:12.2e} {shifted[1]:12.2e}" if plain else f"{'no SV voltages':>38}"
    print(f"{label:<22} {created['Bus']:6d} {assets:7d} {len(graph):8d} {seconds:9.4f} {sv}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="conversions per sample; the best time is shown")
    args = parser.parse_args()
    setup_django()

    import cimpy

    from twin.services import participant_for_cli

    samples = Path(cimpy.__file__).parent / "examples" / "sampledata"
    participant = participant_for_cli("Benchmark utility")
    print(f"{'sample':<22} {'buses':>6} {'assets':>7} {'triples':>8} {'convert s':>9} "
          f"{'max|Δvm| pu':>12} {'max|Δva| °':>12} {'Δva shifted':>12}")
    for label, parts in SAMPLE_DIRS.items():
        check_sample(label, sorted(samples.joinpath(*parts).glob("*.xml")), participant, args.repeat)


if __name__ == "__main__":
    main()
