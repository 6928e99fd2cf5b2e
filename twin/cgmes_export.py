"""CGMES export of a stored grid: its twin form written as EQ, TP, SSH, and SV from one of its succeeded load-flow runs.

One place for what the command (`manage.py export_cgmes`) and the API (`GET /grids/{id}/cgmes`) both do; the mapping
itself is `ontology.converters.cgmes_export`.
"""

from __future__ import annotations

from ontology.converters.cgmes_export import BusState, graph_to_cgmes
from ontology.errors import OntologyError
from twin import models, selectors


class RunNotExportable(OntologyError):
    """The run named for the SV profile is not a succeeded load-flow run of this grid."""

    reason = "run_not_exportable"
    status = 422


def run_bus_states(grid: models.Grid, run_id: int) -> dict[str, BusState]:
    """Bus IRI → solved voltage of a succeeded run of `grid`; any other run is refused naming it."""
    run = models.LoadFlowRun.objects.filter(pk=run_id, grid=grid).first()
    if run is None:
        raise RunNotExportable(f"run {run_id} is not a load-flow run of grid {grid.pk}", node=str(run_id))
    if run.status != models.LoadFlowRun.Status.SUCCEEDED:
        raise RunNotExportable(f"run {run_id} has status {run.status}; only a succeeded run has a state to export", node=str(run_id))
    results = models.BusResult.objects.filter(run=run).values_list("bus__iri", "vm_pu", "va_degree")
    return {iri: BusState(vm_pu, va_degree) for iri, vm_pu, va_degree in results}


def grid_cgmes_profiles(grid: models.Grid, *, version: str, run_id: int | None = None) -> dict[str, bytes]:
    """The grid's CGMES profiles {"EQ": …, "TP": …, "SSH": …} (+ "SV" with `run_id`); `ConversionError` names what cannot be written."""
    states = None if run_id is None else run_bus_states(grid, run_id)
    return graph_to_cgmes(selectors.grid_graph(grid), version=version, bus_states=states)


def profile_file_name(grid: models.Grid, version: str, profile: str) -> str:
    return f"grid{grid.pk}_{version}_{profile}.xml"
