"""The rows of the third-party views, built once: the REST views (`sharing.api.shared`), the SPARQL graph
(`sharing.api.sparql`) and the steward's access preview (`sharing.preview`) all send or count these.

Each function takes what the decision point scoped (an agreement, or its restricted queryset) and returns plain dicts;
references to other twin rows are IRIs, never internal ids. `redact` removes the fields an agreement drops, at any
depth, and is applied to every row before it is rendered in any format.
"""

from __future__ import annotations

from django.db.models import QuerySet

from sharing import scope
from sharing.models import Agreement
from sharing.scope import TYPE_OF_MODEL
from twin import models as twin

# part_iris and a transformer's tap tables describe helper objects, not the asset: third-party rows hold its scalars
SKIPPED_FIELDS = {"id", "part_iris", "grid", "telemetry_owner", "retired_at", "tap_table", "phase_tap_table"}
BRANCH_ENDS = {twin.Line: ("from_bus", "to_bus"), twin.Transformer: ("hv_bus", "lv_bus"), twin.Switch: ("bus", "other_bus")}
# Not the run's `summary`: its extremes are the whole grid's, also outside an agreement limited to some feeders.
RUN_FIELDS = ("id", "kind", "status", "at", "start", "end", "step_minutes", "grid_version", "finished_at")
VIOLATION_FIELDS = ("element", "asset_iri", "quantity", "start", "end", "steps", "value", "limit", "severity")
HOSTING_FIELDS = ("pv_kw", "load_kw", "pv_limited_by", "load_limited_by")


def asset_rows(queryset: QuerySet, model, limit: int | None = None) -> list[dict]:
    """Rows of one twin model (the first `limit`, or all): scalar fields as stored, foreign keys as the IRI they point to."""
    scalars, references = [], {}
    for field in model._meta.concrete_fields:
        if field.name in SKIPPED_FIELDS:
            continue
        if field.is_relation:
            references[field.name] = f"{field.name}__iri"
        else:
            scalars.append(field.name)
    values = queryset.order_by("id").values(*scalars, *references.values(), "grid__iri")
    type_name = TYPE_OF_MODEL.get(model, model._meta.model_name)
    rows = []
    for value in values[:limit] if limit is not None else values:
        row = {"iri": value["iri"], "type": type_name, "grid": value["grid__iri"]}
        row.update({name: value[name] for name in scalars if name != "iri"})
        row.update({name: value[lookup] for name, lookup in references.items()})
        rows.append(row)
    return rows


def topology_rows(agreement: Agreement) -> list[dict]:
    """Buses in scope, then the branches (lines, transformers, switches) whose two end buses are both in scope."""
    buses = set(scope.scope_assets(agreement, twin.Bus).values_list("iri", flat=True))
    rows = [{"iri": iri, "type": "bus"} for iri in sorted(buses)]
    for model, (one, other) in BRANCH_ENDS.items():
        ends = scope.scope_assets(agreement, model).values_list("iri", f"{one}__iri", f"{other}__iri").order_by("id")
        rows += [{"iri": iri, "type": "branch", "kind": TYPE_OF_MODEL[model], "from_bus": a, "to_bus": b}
                 for iri, a, b in ends if a in buses and b in buses]
    return rows


def run_rows(runs: QuerySet[twin.LoadFlowRun], limit: int | None = None) -> list[dict]:
    """Load-flow runs, newest first, with their grid's IRI."""
    values = runs.order_by("-id").values(*RUN_FIELDS, "grid__iri")
    return [{**{name: run[name] for name in RUN_FIELDS}, "grid": run["grid__iri"]} for run in (values[:limit] if limit else values)]


def violation_rows(violations: QuerySet[twin.Violation], limit: int | None = None) -> list[dict]:
    """Violations in time order, with their run's id."""
    values = violations.order_by("start", "id").values(*VIOLATION_FIELDS, "run_id")
    return [{**{n: v[n] for n in VIOLATION_FIELDS}, "run": v["run_id"]} for v in (values[:limit] if limit else values)]


def hosting_results(agreement: Agreement, runs: QuerySet[twin.LoadFlowRun]) -> tuple[QuerySet, int]:
    """Hosting capacity of the buses in scope from the latest succeeded hosting-capacity run of each grid, and how many runs."""
    latest: dict[int, int] = {}
    for run_id, grid_id in runs.filter(kind=twin.LoadFlowRun.Kind.HOSTING_CAPACITY).order_by("grid_id", "-id").values_list("id", "grid_id"):
        latest.setdefault(grid_id, run_id)
    found = twin.HostingCapacityResult.objects.filter(run_id__in=latest.values(), bus__in=scope.scope_assets(agreement, twin.Bus))
    return found, len(latest)


def hosting_rows(results: QuerySet[twin.HostingCapacityResult], limit: int | None = None) -> list[dict]:
    """Hosting capacity per bus (kW), run by run."""
    values = results.order_by("run_id", "id").values("bus__iri", "run_id", *HOSTING_FIELDS)
    return [{"bus": r["bus__iri"], "run": r["run_id"], **{n: r[n] for n in HOSTING_FIELDS}} for r in (values[:limit] if limit else values)]


def redact(rows: list[dict], drop_fields: frozenset[str]) -> list[dict]:
    """The rows without the fields an agreement drops (at any depth of nested dicts and lists)."""
    if not drop_fields:
        return rows
    return [_redact(row, drop_fields) for row in rows]


def _redact(value, drop_fields: frozenset[str]):
    if isinstance(value, dict):
        return {k: _redact(v, drop_fields) for k, v in value.items() if k not in drop_fields}
    if isinstance(value, list):
        return [_redact(v, drop_fields) for v in value]
    return value
