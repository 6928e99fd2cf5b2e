"""Reads of the twin: whose measurement points are whose, and a grid (or part of it) as RDF."""

from __future__ import annotations

from collections.abc import Iterator

import pyoxigraph as ox
from django.db.models import Q, QuerySet
from rdflib import Graph

from ontology.document import RdfDocument
from twin import models
from twin.rdf_codec import rows_to_graph

CHUNK = 5000
SKELETON = ["Feeder", "BaseVoltage", "Bus"]
ROW_MODELS = [*SKELETON, *[m.__name__ for m in models.ASSET_MODELS]]


def chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    """Slices of at most `size` items (keeps `IN (...)` lists within every database's limits)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def points_of(participant_ids: list[int], *, writable: bool = False) -> QuerySet[models.Meter]:
    """The measurement points of these participants: the one rule of whose readings are whose (provenance).

    A meter is a participant's point when its `telemetry_owner` is that participant (its gateway sent the readings), or
    when it has no telemetry owner yet and the participant owns it (`owner`), or it has no owner and the participant
    owns its grid. So a grid owner that renames a meter's owner neither takes over the readings another participant's
    gateway sent nor can write to that meter, and a meter that had readings stays its sender's after a re-publish
    retired it. `writable`: only the points a gateway of theirs may send readings to, i.e. not retired.
    """
    mine = Q(telemetry_owner__in=participant_ids) | Q(telemetry_owner__isnull=True) & (
        Q(owner__in=participant_ids) | Q(owner__isnull=True, grid__owner__in=participant_ids))
    meters = models.Meter.objects.filter(mine)
    return meters.filter(retired_at__isnull=True) if writable else meters


def buses_behind_transformers(grid: models.Grid) -> dict[int, str]:
    """Bus id → IRI of the transformer whose low-voltage side supplies it (its secondary substation), for the buses
    reachable from a transformer's LV bus through lines and closed switches without crossing another transformer."""
    links: dict[int, set[int]] = {}
    edges = [*models.Line.objects.filter(grid=grid, in_service=True).values_list("from_bus_id", "to_bus_id"),
             *models.Switch.objects.filter(grid=grid, open=False).values_list("bus_id", "other_bus_id")]
    for one, other in edges:
        links.setdefault(one, set()).add(other)
        links.setdefault(other, set()).add(one)
    transformers = models.Transformer.objects.filter(grid=grid, in_service=True).order_by("-vn_hv_kv", "id")
    hv_buses = set(transformers.values_list("hv_bus_id", flat=True))
    behind: dict[int, str] = {}
    for iri, lv_bus in transformers.values_list("iri", "lv_bus_id"):
        pending = [lv_bus]
        while pending:
            bus = pending.pop()
            if bus in behind or (bus in hv_buses and bus != lv_bus):
                continue
            behind[bus] = iri
            pending.extend(links.get(bus, ()))
    return behind


def bus_of_measured(grid: models.Grid) -> dict[str, int]:
    """Measured IRI (a bus, or an asset connected to one bus) → the bus id, for the meters of a grid."""
    found = dict(models.Bus.objects.filter(grid=grid).values_list("iri", "id"))
    for model in (models.Load, models.StaticGenerator, models.Storage, models.EVCharger, models.ExternalGrid, models.ShuntCompensator,
                  models.SynchronousMachine, models.AsynchronousMachine, models.EquivalentInjection, models.EquivalentShunt,
                  models.StaticVarCompensator):
        found.update(model.objects.filter(grid=grid).values_list("iri", "bus_id"))
    return found


def grid_rows(grid: models.Grid, iris: set[str] | None = None) -> tuple[dict, dict[str, list[dict]], dict[str, dict]]:
    """A grid's rows as `values()` dicts per model (optionally only those with the given IRIs) and the IRI maps.

    Retired rows (dropped by a write, kept for their readings or results) are not part of the grid's model: they are
    left out, so the grid's RDF form (export, the context a change is validated in) is the grid as last published.
    """
    rows = {}
    for name in ROW_MODELS:
        queryset = getattr(models, name).objects.filter(grid=grid, retired_at__isnull=True).order_by("id")
        if iris is None:
            rows[name] = list(queryset.values())
        else:
            wanted = sorted(iris)
            rows[name] = [row for part in chunks(wanted) for row in queryset.filter(iri__in=part).values()]
    iri_of = {name: dict(getattr(models, name).objects.filter(grid=grid).values_list("id", "iri")) for name in SKELETON}
    owner_ids = {grid.owner_id} | {r.get("owner_id") for name in rows for r in rows[name] if r.get("owner_id")}
    iri_of["Participant"] = dict(models.Participant.objects.filter(id__in=owner_ids).values_list("id", "iri"))
    grid_row = {"iri": grid.iri, "name": grid.name, "owner_id": grid.owner_id}
    return grid_row, rows, iri_of


def grid_graph(grid: models.Grid) -> Graph:
    """The whole grid in its RDF form (what export serves)."""
    return rows_to_graph(*grid_rows(grid))


def neighbourhood_graph(grid: models.Grid, change: RdfDocument) -> Graph:
    """The stored nodes a partial change refers to, with the base voltages of the buses among them."""
    subjects = change.subjects
    referenced = {q.object.value for q in change.quads if isinstance(q.object, ox.NamedNode) and q.object not in subjects}
    bus_voltages = models.Bus.objects.filter(grid=grid, iri__in=referenced).values_list("base_voltage__iri", flat=True)
    referenced |= set(bus_voltages)
    bus_ids = {
        r[f]
        for name in ROW_MODELS[3:]
        for r in getattr(models, name).objects.filter(grid=grid, iri__in=referenced).values()
        for f in ("bus_id", "other_bus_id", "from_bus_id", "to_bus_id", "hv_bus_id", "mv_bus_id", "lv_bus_id")
        if r.get(f)
    }
    referenced |= set(models.Bus.objects.filter(id__in=bus_ids).values_list("iri", flat=True))
    return rows_to_graph(*grid_rows(grid, referenced))
