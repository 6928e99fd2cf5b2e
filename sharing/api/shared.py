"""Third-party twin views under /api/v1/shared/: what one agreement in force grants, redacted and aggregated as it says.

Each request declares its purpose (`?purpose=`) and, when several agreements grant it, names one
(`?agreement=`). JSON by default; JSON-LD (`Accept: application/ld+json`) and Turtle (`text/turtle`) carry
exactly the same redacted rows. Telemetry is aggregated in the database over the provider's groups
(`group_by` of the agreement), with groups and buckets of fewer than k meters suppressed.
"""

from __future__ import annotations

from collections import defaultdict

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response

from ingest.aggregates import group_aggregates, point_readings
from ingest.selectors import QueryTooLarge
from sharing import decisions, scope
from sharing.api.base import PAGE_PARAMETERS, PolicyViewSet
from sharing.api.rows import as_jsonld, as_turtle, negotiated_format
from sharing.models import RESOLUTION_ORDER, Purpose, Resolution
from sharing.rows import asset_rows, hosting_results, hosting_rows, redact, run_rows, topology_rows, violation_rows
from sharing.scope import MODEL_OF_TYPE
from twin import models as twin
from twin.api.serializers import MAX_IRI_CHARS, IriField, QuerySerializer, ZonedDateTimeField
from twin.api.views import RdfNegotiationMixin
from twin.models import QUANTITIES

SHARED_PARAMETERS = [
    OpenApiParameter(decisions.PURPOSE_PARAMETER, str, enum=Purpose.values, required=True,
                     description="Why you read this; an agreement in force must grant it."),
    OpenApiParameter(decisions.AGREEMENT_PARAMETER, {"type": "string", "minLength": 1, "maxLength": MAX_IRI_CHARS},
                     description="Id or uid of the agreement to read under (when several grant it)."),
]
# Every shared view answers the same rows as JSON (default), JSON-LD or Turtle (negotiated_format).
SHARED_RESPONSES = {(200, "application/json"): OpenApiTypes.OBJECT, (200, "application/ld+json"): OpenApiTypes.OBJECT,
                    (200, "text/turtle"): OpenApiTypes.STR}


class FeederQuery(QuerySerializer):
    """The feeder a shared view may be narrowed to."""

    feeder = IriField(required=False, help_text="Only this feeder (IRI) of the agreement's scope; 404 outside it.")

# A group's min and max are each one household's own value: aggregates go out as mean, sum and counts only.
WITHHELD_EXTREMES = ("min", "max")


class SharedViewSet(RdfNegotiationMixin, PolicyViewSet):
    """Base of the third-party views: rows of the decision's agreement, redacted, in the negotiated format."""

    def in_feeder(self, rows):
        """Rows narrowed to the feeder named by `?feeder=<IRI>` (one of the provider's groups, not a set the consumer makes);
        404 when that feeder is outside the agreement, as when it does not exist."""
        iri = FeederQuery.of(self.request).get("feeder")
        if not iri:
            return rows
        if not scope.scope_feeders(self.decision.agreement).filter(iri=iri).exists():
            raise NotFound("no such feeder")
        return rows.filter(feeder__iri=iri)

    def page(self, rows: list) -> tuple[list, dict]:
        """One page of the rows by the API's one pagination (`limit`, at most 1,000, and `offset`), with its place."""
        found = self.paginate_queryset(rows)
        return found, {"count": self.paginator.count, "limit": self.paginator.limit, "offset": self.paginator.offset}

    def scoped(self, model):
        """Rows of another twin model under the same agreement (e.g. the lines of a topology)."""
        return scope.scope_assets(self.decision.agreement, model)

    def respond(self, body: dict, rows: int):
        """The body with the agreement's duties, in JSON, JSON-LD or Turtle; `rows` records went out."""
        obligations = self.decision.obligations
        body = {**redact([body], obligations.drop_fields)[0],
                "agreement": self.decision.agreement.uid, "attribution": obligations.attribution or None,
                "delete_after_days": obligations.delete_after_days}
        self.records_out = rows
        chosen = negotiated_format(self.request.META.get("HTTP_ACCEPT", ""))
        if chosen == "json-ld":
            return Response(as_jsonld(body), content_type="application/ld+json")
        if chosen == "turtle":
            return HttpResponse(as_turtle(body), content_type="text/turtle; charset=utf-8")
        return Response(body)


class SharedAssetViewSet(SharedViewSet):
    """Assets of one type that an agreement granting asset metadata covers."""

    resource = "shared.asset"

    @extend_schema(parameters=[*SHARED_PARAMETERS, FeederQuery, *PAGE_PARAMETERS], responses=SHARED_RESPONSES)
    def list(self, request):
        rows = self.get_queryset()
        if any(f.name == "feeder" for f in self.asset_model._meta.get_fields()):
            rows = self.in_feeder(rows)
        rows = asset_rows(rows, self.asset_model)
        page, meta = self.page(rows)
        return self.respond({**meta, "results": page}, len(page))


def shared_asset_viewset(type_name: str) -> type[SharedAssetViewSet]:
    """The third-party list of one asset type."""
    model = MODEL_OF_TYPE[type_name]
    return type(f"Shared{model.__name__}ViewSet", (SharedAssetViewSet,),
                {"asset_model": model, "__doc__": f"{model._meta.verbose_name_plural.capitalize()} an agreement lets you see."})


class SharedTopologyViewSet(SharedViewSet):
    """Buses and the branches between them (lines, transformers, switches) inside an agreement granting topology."""

    resource = "shared.topology"
    asset_model = twin.Bus

    @extend_schema(parameters=SHARED_PARAMETERS, responses=SHARED_RESPONSES)
    def list(self, request):
        rows = topology_rows(self.decision.agreement)
        return self.respond({"count": len(rows), "results": rows}, len(rows))


class SharedTelemetryQuery(QuerySerializer):
    """Query parameters of GET /shared/telemetry."""

    quantity = serializers.ChoiceField(choices=sorted(QUANTITIES))
    start = ZonedDateTimeField()
    end = ZonedDateTimeField()
    resolution = serializers.ChoiceField(choices=Resolution.values, required=False,
                                         help_text="Default: the agreement's; finer than it is refused.")

    def validate(self, attrs):
        if attrs["end"] <= attrs["start"]:
            raise serializers.ValidationError("end must be after start")
        return attrs


class SharedTelemetryViewSet(SharedViewSet):
    """Telemetry an agreement grants: aggregated per provider group (k-suppressed), or per meter where it grants raw data."""

    resource = "shared.telemetry"

    @extend_schema(parameters=[*SHARED_PARAMETERS, FeederQuery, SharedTelemetryQuery], responses=SHARED_RESPONSES)
    def list(self, request):
        params, obligations = SharedTelemetryQuery.of(request), self.decision.obligations
        resolution = params.get("resolution") or obligations.resolution
        if RESOLUTION_ORDER.index(resolution) < RESOLUTION_ORDER.index(obligations.resolution):
            raise PermissionDenied({"reason": "resolution_not_granted",
                                    "message": f"the agreement grants {obligations.resolution} or coarser, not {resolution}"})
        start = max(params["start"], obligations.data_start) if obligations.data_start else params["start"]
        end = min(params["end"], obligations.data_end) if obligations.data_end else params["end"]
        spec = QUANTITIES[params["quantity"]]
        meters = self.in_feeder(self.get_queryset())  # a feeder outside the scope is 404 even when the window is empty
        try:
            series, rows = self.series(meters, spec, start, end, resolution) if end > start else ([], 0)
        except QueryTooLarge as exc:
            raise ValidationError({"reason": "too_many_rows", "message": str(exc)}) from exc
        per_point = obligations.resolution == Resolution.RAW  # raw granted: series per meter, at any resolution asked
        return self.respond({"quantity": spec.name, "unit": spec.unit, "unit_iri": spec.unit_iri, "resolution": resolution,
                             "start": start, "end": end, "group_by": "point" if per_point else obligations.group_by,
                             "min_group_size": obligations.min_group_size, "series": series}, rows)

    def series(self, meters, spec, start, end, resolution) -> tuple[list[dict], int]:
        """Per grid (its own time zone): group aggregates, or per-meter series when the agreement grants raw data."""
        obligations = self.decision.obligations
        series, rows = [], 0
        if obligations.resolution == Resolution.RAW:
            found = meters.values_list("id", "iri", "grid__iri", "grid__time_zone")
            by_grid: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
            for meter_id, iri, grid_iri, time_zone in found:
                by_grid[(grid_iri, time_zone)][meter_id] = iri
            for (_, time_zone), iris in sorted(by_grid.items()):
                for entry in point_readings(point_ids=sorted(iris), spec=spec, start=start, end=end, resolution=resolution,
                                            time_zone=time_zone):
                    entry = {"point_iri": iris[entry.pop("point")], **entry}
                    rows += len(entry.get("readings", []))
                    series.append(entry)
            return series, rows
        for (_, time_zone), groups in sorted(scope.meter_groups(meters, obligations.group_by).items()):
            for group in group_aggregates(groups=groups, spec=spec, start=start, end=end, resolution=resolution,
                                          time_zone=time_zone, min_group_size=obligations.min_group_size):
                group["buckets"] = [{k: v for k, v in b.items() if k not in WITHHELD_EXTREMES} for b in group["buckets"]]
                rows += len(group["buckets"])
                series.append(group)
        return series, rows


class SharedRunViewSet(SharedViewSet):
    """Succeeded load-flow runs on grids an agreement granting load-flow results covers, and their bus results."""

    resource = "shared.run"
    lookup_value_regex = r"\d+"

    @extend_schema(operation_id="v1_shared_loadflow_runs_list", parameters=[*SHARED_PARAMETERS, *PAGE_PARAMETERS],
                   responses=SHARED_RESPONSES)
    def list(self, request):
        page, meta = self.page(run_rows(self.get_queryset()))
        return self.respond({**meta, "results": page}, len(page))

    @extend_schema(parameters=SHARED_PARAMETERS, responses=SHARED_RESPONSES)
    def retrieve(self, request, pk=None):
        found = run_rows(self.get_queryset().filter(pk=pk))
        if not found:
            raise NotFound("no such run")
        return self.respond(found[0], 1)

    @extend_schema(parameters=SHARED_PARAMETERS, responses=SHARED_RESPONSES)
    @action(detail=True, methods=["get"])
    def results(self, request, pk=None):
        """Snapshot bus results of buses in scope. A run fed by measured telemetry inherits the telemetry's terms: unless the
        agreement grants raw data, only per-group extremes over groups of at least k buses go out."""
        run = self.get_queryset().filter(pk=pk).first()
        if run is None:
            raise NotFound("no such run")
        buses = self.scoped(twin.Bus)
        results = run.bus_results.filter(bus__in=buses).order_by("id").values("bus_id", "bus__iri", "vm_pu", "va_degree")
        obligations = self.decision.obligations
        measured = (run.inputs or {}).get("measured", 0) > 0
        if not measured or obligations.resolution == Resolution.RAW:
            rows = [{"bus": r["bus__iri"], "vm_pu": r["vm_pu"], "va_degree": r["va_degree"]} for r in results]
            return self.respond({"run": run.pk, "grouped": False, "results": rows}, len(rows))
        groups: dict[str, list[float]] = defaultdict(list)
        key_of = scope.bus_group_keys(run.grid, obligations.group_by)
        for r in results:
            if r["vm_pu"] is not None:
                groups[key_of[r["bus_id"]]].append(r["vm_pu"])
        rows = [{"group": key, "buses": len(values), "suppressed": len(values) < obligations.min_group_size,
                 **({} if len(values) < obligations.min_group_size else {"vm_min_pu": min(values), "vm_max_pu": max(values)})}
                for key, values in sorted(groups.items())]
        return self.respond({"run": run.pk, "grouped": True, "results": rows}, len(rows))


class SharedViolationViewSet(SharedViewSet):
    """Violations on assets an agreement granting violations covers."""

    resource = "shared.violation"

    @extend_schema(parameters=[*SHARED_PARAMETERS, *PAGE_PARAMETERS], responses=SHARED_RESPONSES)
    def list(self, request):
        page, meta = self.page(violation_rows(self.get_queryset()))
        return self.respond({**meta, "results": page}, len(page))


class SharedHostingViewSet(SharedViewSet):
    """Hosting capacity per bus in scope, from the latest succeeded hosting-capacity run of each covered grid."""

    resource = "shared.hosting"

    @extend_schema(parameters=[*SHARED_PARAMETERS, *PAGE_PARAMETERS], responses=SHARED_RESPONSES)
    def list(self, request):
        results, _ = hosting_results(self.decision.agreement, self.get_queryset())
        page, meta = self.page(hosting_rows(results))
        return self.respond({**meta, "results": page}, len(page))
