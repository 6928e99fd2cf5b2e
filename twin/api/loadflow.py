"""Load-flow API: start runs, follow them, read results, violations, EN 50160 summaries and pictures. Views declare; services decide."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.response import Response

from sharing.api.base import PAGE_PARAMETERS, PolicyViewSet
from twin import models, plots
from twin.api.serializers import MAX_IRI_CHARS, BodySerializer, IdField, IriField, NumberField, QuerySerializer, ZonedDateTimeField
from twin.api.views import JsonBodyParser
from twin.loadflow import scenarios, selectors, services
from twin.tasks import enqueue

Run = models.LoadFlowRun


class RunSerializer(serializers.ModelSerializer):
    progress_percent = serializers.FloatField(read_only=True)

    class Meta:
        model = Run
        fields = [*selectors.RUN_FIELDS, "progress_percent"]
        read_only_fields = fields


MAX_LOADING_LIMITS = 10_000  # per-asset loading limits in one run


class ScenarioField(serializers.JSONField):
    """A what-if scenario, checked by the scenario's own rules (twin.loadflow.scenarios.validate): types, keys and size caps."""

    def to_internal_value(self, data):
        try:
            scenarios.validate(data)
        except scenarios.ScenarioError as exc:
            raise serializers.ValidationError(exc.message) from exc
        return data


class RunParametersSerializer(BodySerializer):
    """What a run may be asked to judge by or change: known keys only, each typed (units in the names)."""

    vm_min_pu = NumberField(required=False, help_text="Lower end of the voltage band (pu; default 0.9).")
    vm_max_pu = NumberField(required=False, help_text="Upper end of the voltage band (pu; default 1.1).")
    max_loading_percent = NumberField(required=False, help_text="Loading limit of every line and transformer (% of rating).")
    loading_limits = serializers.DictField(child=NumberField(), required=False, help_text="Per-asset loading limits: IRI → %.")
    scenario = ScenarioField(required=False, help_text='What-if: {"changes": [...]} (add / remove / set), at most '
                             f"{scenarios.MAX_CHANGES} changes naming at most {scenarios.MAX_NAMED} buses and assets.")
    feeder = IriField(required=False, help_text="Hosting capacity: the buses of this feeder (IRI).")
    max_kw = NumberField(required=False, help_text="Hosting capacity: the largest size tried (kW).")
    tolerance_kw = NumberField(required=False, help_text="Hosting capacity: precision of the search (kW).")

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(str(key) for key in data if key not in self.fields)
            if unknown:
                raise serializers.ValidationError({unknown[0][:100]: [f"not a parameter of a run: one of {', '.join(self.fields)}"]})
        return super().to_internal_value(data)

    def validate_loading_limits(self, value: dict) -> dict:
        if len(value) > MAX_LOADING_LIMITS:
            raise serializers.ValidationError(f"at most {MAX_LOADING_LIMITS} per-asset loading limits")
        iri = IriField()
        for key in value:
            iri.run_validation(key)
        return value


class RunRequestSerializer(BodySerializer):
    grid = IdField()
    kind = serializers.ChoiceField(choices=Run.Kind.values, default=Run.Kind.SNAPSHOT)
    at = ZonedDateTimeField(required=False, help_text="Snapshot time (default now).")
    start = ZonedDateTimeField(required=False)
    end = ZonedDateTimeField(required=False)
    step_minutes = serializers.IntegerField(default=15, min_value=1, max_value=1440)
    parameters = RunParametersSerializer(required=False, default=dict)


class ViolationSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.Violation
        fields = ["id", "run", "grid", "element", "asset_iri", "quantity", "start", "end", "steps", "value", "limit", "severity"]


class PeriodQuery(QuerySerializer):
    start = ZonedDateTimeField(required=False, help_text="From this time (ISO 8601 with zone).")
    end = ZonedDateTimeField(required=False, help_text="Before this time (ISO 8601 with zone).")


class ResultQuery(PeriodQuery):
    element = serializers.ChoiceField(choices=["bus", "line", "trafo"], default="bus", help_text="Which results (default bus).")
    iri = serializers.CharField(required=False, max_length=(MAX_IRI_CHARS + 1) * selectors.MAX_SERIES_ASSETS,
                                help_text="One asset (time series: one or more, comma-separated; required there).")
    feeder = IriField(required=False, help_text="Buses of one feeder (IRI).")
    vm_below = serializers.FloatField(required=False)
    vm_above = serializers.FloatField(required=False)
    min_loading_percent = serializers.FloatField(required=False)

    def validate_iri(self, value: str) -> list[str]:
        iris = [i for i in value.split(",") if i]
        if any(len(i) > MAX_IRI_CHARS for i in iris):
            raise serializers.ValidationError(f"each IRI has at most {MAX_IRI_CHARS} characters")
        return iris


class PlotQuery(QuerySerializer):
    feeder = IriField(required=False)
    line = IriField(required=False, help_text="line IRI (line-loading)")
    at = ZonedDateTimeField(required=False, help_text="time series: the step to draw")


class RunConflict(APIException):
    """What a run's state (not succeeded) or kind (not a time series) does not have: 409 with the reason."""

    status_code = status.HTTP_409_CONFLICT

    def __init__(self, reason: str, message: str):
        super().__init__({"reason": reason, "message": message})


RESULT_CONFLICT = {409: OpenApiResponse(description="the run has not succeeded (or is not of the kind this needs): run_not_succeeded, "
                                                    "not_a_time_series")}


class LoadFlowRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, PolicyViewSet):
    """Load-flow runs on the grids you operate: start one, follow its progress, read its results."""

    resource = "run"
    serializer_class = RunSerializer
    parser_classes = [JsonBodyParser]
    filterset_fields = {"grid": ["exact"], "kind": ["exact"], "status": ["exact"]}

    def get_queryset(self):
        return super().get_queryset().order_by("-id")

    @extend_schema(request=RunRequestSerializer, responses={201: OpenApiResponse(RunSerializer, description="solved in the request "
                                                                                 "(the embedded default): the finished run"),
                                                            202: OpenApiResponse(RunSerializer, description="queued: poll the run"),
                                                            400: OpenApiResponse(description="bad request"),
                                                            404: OpenApiResponse(description="no such grid"),
                                                            422: OpenApiResponse(description="grid or scenario cannot be solved")})
    def create(self, request):
        """Queue a run (snapshot, time series, what-if, hosting capacity); 202 with the run to poll, or 201 with the finished run
        when it was solved before the answer (the embedded default runs its tasks in the request)."""
        body = RunRequestSerializer(data=request.data)
        if not body.is_valid():
            raise ValidationError({"reason": "invalid_request", "message": "the request does not match the schema of a run", **body.errors})
        data = body.validated_data
        grid = self.decision.queryset.filter(pk=data["grid"]).first()  # for "add", the decision's rows are the grids one may run
        if grid is None:
            raise NotFound("no such grid")
        run = services.loadflow_run_create(grid=grid, kind=data["kind"], at=data.get("at"), start=data.get("start"), end=data.get("end"),
                                           step_minutes=data["step_minutes"], parameters=data["parameters"], user=request.user)
        enqueue(run.pk)
        run.refresh_from_db()  # its real state: on the embedded default the task has already run
        finished = run.status in (Run.Status.SUCCEEDED, Run.Status.FAILED)
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED if finished else status.HTTP_202_ACCEPTED)

    def _succeeded(self) -> Run:
        run = self.get_object()
        if run.status != Run.Status.SUCCEEDED:
            raise RunConflict("run_not_succeeded", f"the run is {run.status}: no results" + (f" ({run.error})" if run.error else ""))
        return run

    @extend_schema(parameters=[ResultQuery, *PAGE_PARAMETERS], responses={200: OpenApiTypes.OBJECT, **RESULT_CONFLICT})
    @action(detail=True, methods=["get"], filter_backends=[])
    def results(self, request, pk=None):
        """Snapshot: per bus / line / trafo results, filtered and paginated. Time series: the series of the assets named by `iri`."""
        run = self._succeeded()
        query = ResultQuery.of(request)
        element, iris = query["element"], query.get("iri", [])
        if run.chunks_total:
            if not iris or len(iris) > selectors.MAX_SERIES_ASSETS:
                raise ValidationError({"reason": "invalid_filter",
                                       "message": f"name 1 to {selectors.MAX_SERIES_ASSETS} assets with iri=IRI[,IRI…]"})
            try:
                found = selectors.series(run, element, iris, start=query.get("start"), end=query.get("end"))
            except KeyError as exc:
                raise NotFound(f"no {element} {exc.args[0]} in this run") from exc
            return Response({"run": run.pk, "element": element, **found, "summary": run.summary})
        if len(iris) > 1:
            raise ValidationError({"reason": "invalid_filter", "message": "a snapshot's results take one iri"})
        iri = iris[0] if iris else None
        if element == "bus":
            rows = selectors.bus_results(run, feeder=query.get("feeder"), iri=iri, vm_below=query.get("vm_below"),
                                         vm_above=query.get("vm_above"))
        else:
            rows = selectors.branch_results(run, element, iri=iri, min_loading_percent=query.get("min_loading_percent"))
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(page)

    @extend_schema(responses={200: ViolationSerializer(many=True), **RESULT_CONFLICT})
    @action(detail=True, methods=["get"], filter_backends=[])  # the run's own violations: the run list's filters do not apply
    def violations(self, request, pk=None):
        """The run's violations (voltage outside the band, loading above the limit), as periods."""
        run = self._succeeded()
        page = self.paginate_queryset(run.violations.order_by("start", "id"))
        return self.get_paginated_response(ViolationSerializer(page, many=True).data)

    @extend_schema(responses={200: OpenApiTypes.OBJECT, **RESULT_CONFLICT})
    @action(detail=True, methods=["get"])
    def en50160(self, request, pk=None):
        """Time series: per bus and week, the share of values within ±10 % of nominal (EN 50160 asks ≥ 95 %)."""
        run = self._succeeded()
        if not run.chunks_total:
            raise RunConflict("not_a_time_series", "the EN 50160 summary needs a time-series run")
        rows = selectors.en50160_weekly(run)
        return Response({"run": run.pk, "weeks": rows, "non_compliant": sum(not r["compliant"] for r in rows)})

    @extend_schema(parameters=PAGE_PARAMETERS, responses={200: OpenApiTypes.OBJECT, **RESULT_CONFLICT})
    @action(detail=True, methods=["get"], url_path="hosting-capacity", filter_backends=[])
    def hosting_capacity(self, request, pk=None):
        """Hosting-capacity run: per bus the largest PV and load in kW without any violation, and the step that limits each."""
        run = self._succeeded()
        rows = selectors.hosting_results(run).values(*selectors.HOSTING_FIELDS)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(page)

    @extend_schema(parameters=[PlotQuery], responses={(200, "image/png"): OpenApiTypes.BINARY, **RESULT_CONFLICT})
    @action(detail=True, methods=["get"], url_path=r"plots/(?P<picture>voltage-profile|grid|line-loading)\.png")
    def plots(self, request, pk=None, picture=None):
        """A picture of the run's stored results: voltage profile along a feeder, grid map, or a line's loading over time."""
        run = self._succeeded()
        query = PlotQuery.of(request)
        try:
            png = plots.run_picture(run, picture, feeder=query.get("feeder"), line=query.get("line"), at=query.get("at"))
        except plots.PictureError as exc:
            raise ValidationError({"reason": "invalid_picture", "message": str(exc)}) from exc
        return HttpResponse(png, content_type="image/png")


class ViolationViewSet(mixins.ListModelMixin, PolicyViewSet):
    """Violations on the grids you operate, by grid and time window (`start`, `end` overlap the violation's period)."""

    resource = "violation"
    serializer_class = ViolationSerializer
    filterset_fields = {"grid": ["exact"], "run": ["exact"], "element": ["exact"], "quantity": ["exact"], "severity": ["exact"],
                        "asset_iri": ["exact"]}

    @extend_schema(parameters=[PeriodQuery])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        found = super().get_queryset().filter(run__status=Run.Status.SUCCEEDED)
        period = PeriodQuery.of(self.request)
        start, end = period.get("start"), period.get("end")
        if start:
            found = found.filter(end__gte=start)
        if end:
            found = found.filter(start__lt=end)
        return found.order_by("start", "id")
