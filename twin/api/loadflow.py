"""Load-flow API: start runs, follow them, read results, violations, EN 50160 summaries and pictures. Views declare; services decide."""

from __future__ import annotations

from django.http import HttpResponse
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from sharing.api.base import PolicyViewSet
from twin import models, plots
from twin.loadflow import selectors, services
from twin.tasks import enqueue

Run = models.LoadFlowRun


class RunSerializer(serializers.ModelSerializer):
    progress_percent = serializers.FloatField(read_only=True)

    class Meta:
        model = Run
        fields = [*selectors.RUN_FIELDS, "progress_percent"]
        read_only_fields = fields


class RunRequestSerializer(serializers.Serializer):
    grid = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Run.Kind.values, default=Run.Kind.SNAPSHOT)
    at = serializers.DateTimeField(required=False, help_text="Snapshot time (default now).")
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)
    step_minutes = serializers.IntegerField(default=15)
    parameters = serializers.DictField(required=False, default=dict,
                                       help_text="vm_min_pu, vm_max_pu, max_loading_percent, loading_limits, scenario, feeder …")


class ViolationSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.Violation
        fields = ["id", "run", "grid", "element", "asset_iri", "quantity", "start", "end", "steps", "value", "limit", "severity"]


def _number(request, name: str) -> float | None:
    text = request.query_params.get(name)
    if text in (None, ""):
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise ValidationError({"reason": "invalid_filter", "message": f"{name} must be a number"}) from exc


def _time(request, name: str):
    text = request.query_params.get(name)
    if not text:
        return None
    value = parse_datetime(text)
    if value is None or value.tzinfo is None:
        raise ValidationError({"reason": "invalid_filter", "message": f"{name} must be an ISO 8601 time with a zone"})
    return value


RESULT_PARAMETERS = [
    OpenApiParameter("element", str, enum=["bus", "line", "trafo"], description="Which results (default bus)."),
    OpenApiParameter("iri", str, description="One asset (time series: one or more, comma-separated; required there)."),
    OpenApiParameter("feeder", str, description="Buses of one feeder (IRI)."),
    OpenApiParameter("vm_below", float), OpenApiParameter("vm_above", float), OpenApiParameter("min_loading_percent", float),
    OpenApiParameter("start", OpenApiTypes.DATETIME), OpenApiParameter("end", OpenApiTypes.DATETIME),
]


class LoadFlowRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, PolicyViewSet):
    """Load-flow runs on the grids you operate: start one, follow its progress, read its results."""

    resource = "run"
    serializer_class = RunSerializer
    filterset_fields = {"grid": ["exact"], "kind": ["exact"], "status": ["exact"]}

    def get_queryset(self):
        return super().get_queryset().order_by("-id")

    @extend_schema(request=RunRequestSerializer, responses={202: RunSerializer, 400: OpenApiResponse(description="bad request"),
                                                            404: OpenApiResponse(description="no such grid"),
                                                            422: OpenApiResponse(description="grid or scenario cannot be solved")})
    def create(self, request):
        """Queue a run (snapshot, time series, what-if, hosting capacity); 202 with the run to poll."""
        body = RunRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        grid = self.decision.queryset.filter(pk=data["grid"]).first()  # for "add", the decision's rows are the grids one may run
        if grid is None:
            raise NotFound("no such grid")
        run = services.loadflow_run_create(grid=grid, kind=data["kind"], at=data.get("at"), start=data.get("start"), end=data.get("end"),
                                           step_minutes=data["step_minutes"], parameters=data["parameters"], user=request.user)
        enqueue(run.pk)
        return Response(RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    def _succeeded(self) -> Run:
        run = self.get_object()
        if run.status != Run.Status.SUCCEEDED:
            raise ValidationError({"reason": "run_not_succeeded", "message": f"the run is {run.status}: no results"
                                   + (f" ({run.error})" if run.error else "")})
        return run

    @extend_schema(parameters=RESULT_PARAMETERS, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def results(self, request, pk=None):
        """Snapshot: per bus / line / trafo results, filtered and paginated. Time series: the series of the assets named by `iri`."""
        run = self._succeeded()
        element = request.query_params.get("element", "bus")
        if element not in ("bus", "line", "trafo"):
            raise ValidationError({"reason": "invalid_filter", "message": "element is bus, line or trafo"})
        iri = request.query_params.get("iri")
        if run.chunks_total:
            iris = [i for i in (iri or "").split(",") if i]
            if not iris or len(iris) > selectors.MAX_SERIES_ASSETS:
                raise ValidationError({"reason": "invalid_filter",
                                       "message": f"name 1 to {selectors.MAX_SERIES_ASSETS} assets with iri=IRI[,IRI…]"})
            try:
                found = selectors.series(run, element, iris, start=_time(request, "start"), end=_time(request, "end"))
            except KeyError as exc:
                raise NotFound(f"no {element} {exc.args[0]} in this run") from exc
            return Response({"run": run.pk, "element": element, **found, "summary": run.summary})
        if element == "bus":
            rows = selectors.bus_results(run, feeder=request.query_params.get("feeder"), iri=iri, vm_below=_number(request, "vm_below"),
                                         vm_above=_number(request, "vm_above"))
        else:
            rows = selectors.branch_results(run, element, iri=iri, min_loading_percent=_number(request, "min_loading_percent"))
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(page)

    @extend_schema(responses={200: ViolationSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def violations(self, request, pk=None):
        """The run's violations (voltage outside the band, loading above the limit), as periods."""
        run = self._succeeded()
        page = self.paginate_queryset(run.violations.order_by("start", "id"))
        return self.get_paginated_response(ViolationSerializer(page, many=True).data)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def en50160(self, request, pk=None):
        """Time series: per bus and week, the share of values within ±10 % of nominal (EN 50160 asks ≥ 95 %)."""
        run = self._succeeded()
        if not run.chunks_total:
            raise ValidationError({"reason": "not_a_time_series", "message": "the EN 50160 summary needs a time-series run"})
        rows = selectors.en50160_weekly(run)
        return Response({"run": run.pk, "weeks": rows, "non_compliant": sum(not r["compliant"] for r in rows)})

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"], url_path="hosting-capacity")
    def hosting_capacity(self, request, pk=None):
        """Hosting-capacity run: per bus the largest PV and load in kW without any violation, and the step that limits each."""
        run = self._succeeded()
        rows = selectors.hosting_results(run).values(*selectors.HOSTING_FIELDS)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(page)

    @extend_schema(parameters=[OpenApiParameter("feeder", str), OpenApiParameter("line", str, description="line IRI (line-loading)"),
                               OpenApiParameter("at", OpenApiTypes.DATETIME, description="time series: the step to draw")],
                   responses={(200, "image/png"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], url_path=r"plots/(?P<picture>voltage-profile|grid|line-loading)\.png")
    def plots(self, request, pk=None, picture=None):
        """A picture of the run's stored results: voltage profile along a feeder, grid map, or a line's loading over time."""
        run = self._succeeded()
        try:
            png = plots.run_picture(run, picture, feeder=request.query_params.get("feeder"), line=request.query_params.get("line"),
                                    at=_time(request, "at"))
        except plots.PictureError as exc:
            raise ValidationError({"reason": "invalid_picture", "message": str(exc)}) from exc
        return HttpResponse(png, content_type="image/png")


class ViolationViewSet(mixins.ListModelMixin, PolicyViewSet):
    """Violations on the grids you operate, by grid and time window (`start`, `end` overlap the violation's period)."""

    resource = "violation"
    serializer_class = ViolationSerializer
    filterset_fields = {"grid": ["exact"], "run": ["exact"], "element": ["exact"], "quantity": ["exact"], "severity": ["exact"],
                        "asset_iri": ["exact"]}

    @extend_schema(parameters=[OpenApiParameter("start", OpenApiTypes.DATETIME), OpenApiParameter("end", OpenApiTypes.DATETIME)])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        found = super().get_queryset().filter(run__status=Run.Status.SUCCEEDED)
        start, end = _time(self.request, "start"), _time(self.request, "end")
        if start:
            found = found.filter(end__gte=start)
        if end:
            found = found.filter(start__lt=end)
        return found.order_by("start", "id")
