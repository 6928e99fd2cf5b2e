"""What an agreement's scope covers, as querysets of the twin (grids, assets, metered points, runs, results).

One place turns the scope terms of an `Agreement` (grids, feeders, asset types, listed assets) into rows:
the decision point hands these querysets to the views; nothing else builds them.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from sharing.models import Agreement, GroupBy
from twin import models as twin
from twin.selectors import bus_of_measured, buses_behind_transformers

MODEL_OF_TYPE = {
    "bus": twin.Bus,
    "external_grid": twin.ExternalGrid,
    "line": twin.Line,
    "transformer": twin.Transformer,
    "switch": twin.Switch,
    "load": twin.Load,
    "static_generator": twin.StaticGenerator,
    "storage": twin.Storage,
    "ev_charger": twin.EVCharger,
    "meter": twin.Meter,
}
TYPE_OF_MODEL = {model: name for name, model in MODEL_OF_TYPE.items()}
# Types whose telemetry a meter carries: the type of the asset it measures (a meter of a bus measures the bus).
MEASURED_TYPES = ["bus", "load", "static_generator", "storage", "ev_charger", "external_grid", "line", "transformer"]


def scope_grids(agreement: Agreement) -> QuerySet[twin.Grid]:
    """The provider's grids the agreement covers (all of them when it lists none)."""
    grids = twin.Grid.objects.filter(owner_id=agreement.provider_id)
    if agreement.grid_iris:
        grids = grids.filter(iri__in=agreement.grid_iris)
    return grids


def scope_feeders(agreement: Agreement) -> QuerySet[twin.Feeder]:
    """Feeders of the covered grids, narrowed to the listed ones."""
    feeders = twin.Feeder.objects.filter(grid__in=scope_grids(agreement))
    if agreement.feeder_iris:
        feeders = feeders.filter(iri__in=agreement.feeder_iris)
    return feeders


def _feeder_condition(agreement: Agreement, model) -> Q:
    if not agreement.feeder_iris:
        return Q()
    if model is twin.Feeder:
        return Q(iri__in=agreement.feeder_iris)
    if any(f.name == "feeder" for f in model._meta.get_fields()):
        return Q(feeder__iri__in=agreement.feeder_iris)
    return Q(pk__in=[])  # base voltages belong to no feeder


def scope_assets(agreement: Agreement, model) -> QuerySet:
    """Rows of one twin model inside the scope: covered grids and feeders, listed types and assets; never retired meters."""
    rows = model.objects.filter(grid__in=scope_grids(agreement)).filter(_feeder_condition(agreement, model))
    type_name = TYPE_OF_MODEL.get(model)
    if agreement.asset_types and type_name is not None and type_name not in agreement.asset_types:
        return rows.none()
    if agreement.asset_iris and type_name is not None:
        rows = rows.filter(iri__in=agreement.asset_iris)
    if model is twin.Meter:
        rows = rows.filter(retired_at__isnull=True)
    return rows


def scope_points(agreement: Agreement) -> QuerySet[twin.Meter]:
    """Meters whose telemetry the agreement covers: in the covered grids and feeders, measuring an asset of a listed type
    (or a listed asset), and only readings the provider itself sent (provenance: `telemetry_owner`)."""
    meters = twin.Meter.objects.filter(grid__in=scope_grids(agreement), retired_at__isnull=True,
                                       telemetry_owner_id=agreement.provider_id).filter(_feeder_condition(agreement, twin.Meter))
    types = [t for t in (agreement.asset_types or MEASURED_TYPES) if t in MEASURED_TYPES]
    if agreement.asset_types or agreement.asset_iris:
        measured = Q(pk__in=[])
        for type_name in types:
            assets = MODEL_OF_TYPE[type_name].objects.filter(grid__in=scope_grids(agreement))
            if agreement.asset_iris:
                assets = assets.filter(iri__in=agreement.asset_iris)
            measured |= Q(measured_iri__in=assets.values("iri"))
        if agreement.asset_iris:
            measured |= Q(iri__in=agreement.asset_iris)
        meters = meters.filter(measured)
    return meters


def scope_runs(agreement: Agreement) -> QuerySet[twin.LoadFlowRun]:
    """Succeeded load-flow runs on the covered grids, inside the agreement's data window: derived data carry the terms of
    the data that fed them, so a snapshot's time, or a time series' whole period, must lie in [data_start, data_end)."""
    runs = twin.LoadFlowRun.objects.filter(grid__in=scope_grids(agreement), status=twin.LoadFlowRun.Status.SUCCEEDED)
    snapshot, series = Q(at__isnull=False), Q(at__isnull=True)
    if agreement.data_start:
        snapshot &= Q(at__gte=agreement.data_start)
        series &= Q(start__gte=agreement.data_start)
    if agreement.data_end:
        snapshot &= Q(at__lt=agreement.data_end)
        series &= Q(end__lte=agreement.data_end)
    return runs.filter(snapshot | series)


def scope_violations(agreement: Agreement) -> QuerySet[twin.Violation]:
    """Violations of covered runs on assets inside the scope (buses, lines, transformers)."""
    iris = Q(pk__in=[])
    for model in (twin.Bus, twin.Line, twin.Transformer):
        iris |= Q(asset_iri__in=scope_assets(agreement, model).values("iri"))
    return twin.Violation.objects.filter(run__in=scope_runs(agreement)).filter(iris)


def meter_groups(meters: QuerySet[twin.Meter], group_by: str) -> dict[tuple[str, str], dict[str, list[int]]]:
    """The provider-defined groups of these meters, per (grid IRI, grid time zone): group key → meter ids.

    Groups are the grid, its feeders, or its secondary substations (the transformer whose LV side supplies the
    measured bus); never a set the consumer picks. Meters outside every group of their kind fall in `<grid>#no-<kind>`.
    """
    found: dict[tuple[str, str], dict[str, list[int]]] = {}
    rows = meters.values_list("id", "grid_id", "grid__iri", "grid__time_zone", "feeder__iri", "measured_iri").order_by("id")
    topology: dict[int, tuple[dict[int, str], dict[str, int]]] = {}
    for meter_id, grid_id, grid_iri, time_zone, feeder_iri, measured_iri in rows:
        if group_by == GroupBy.GRID:
            key = grid_iri
        elif group_by == GroupBy.FEEDER:
            key = feeder_iri or f"{grid_iri}#no-feeder"
        else:
            if grid_id not in topology:
                grid = twin.Grid(pk=grid_id)
                topology[grid_id] = (buses_behind_transformers(grid), bus_of_measured(grid))
            behind, bus_of = topology[grid_id]
            key = behind.get(bus_of.get(measured_iri)) or f"{grid_iri}#no-transformer"
        found.setdefault((grid_iri, time_zone), {}).setdefault(key, []).append(meter_id)
    return found


def bus_group_keys(grid: twin.Grid, group_by: str) -> dict[int, str]:
    """Bus id → the provider-defined group it belongs to (grid, feeder or secondary substation), for grouped results."""
    buses = twin.Bus.objects.filter(grid=grid).values_list("id", "feeder__iri")
    if group_by == GroupBy.GRID:
        return {bus_id: grid.iri for bus_id, _ in buses}
    if group_by == GroupBy.FEEDER:
        return {bus_id: feeder_iri or grid.iri for bus_id, feeder_iri in buses}
    behind = buses_behind_transformers(grid)
    return {bus_id: behind.get(bus_id) or f"{grid.iri}#no-transformer" for bus_id, _ in buses}
