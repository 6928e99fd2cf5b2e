"""Telemetry API: upload batches (gateways), follow them, query readings and latest values. Views declare; services decide."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response

from ingest import selectors, services
from ingest.api.serializers import BatchSerializer, LatestQuerySerializer, ReadingsQuerySerializer, RejectedReadingSerializer
from ingest.payloads import CSV, JSON, SENML, PayloadError
from sharing.api.base import PolicyViewSet
from twin import models
from twin.api.views import RawBodyParser
from twin.models import QUANTITIES

IDEMPOTENCY_KEY_MAX_CHARS = 200
# The body as the edge judges it. Each reading (or SenML record) inside is judged on its own after the 202: one that is not an
# object with the documented fields is rejected with its reason (GET …/rejected) and the others are stored, so the schema
# says "any value" for the items rather than refusing the whole batch for one of them.
ANY_READINGS = {"type": "array", "items": {}, "description": "readings: {point, quantity, ts, value, unit, quality?} each"}
BATCH_BODIES = {
    JSON: {"oneOf": [ANY_READINGS, {"type": "object", "required": ["readings"], "properties": {"readings": ANY_READINGS}}]},
    SENML: {"type": "array", "items": {}, "description": "a SenML pack (RFC 8428): records with bn, bt, bu, n, t, v, u"},
    CSV: OpenApiTypes.BINARY,
}


class Overloaded(APIException):
    """The workers' backlog is full: the upload is shed at the edge (nothing stored) and retried by the gateway later."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE

    def __init__(self):
        self.wait = settings.GRIDTWIN_INGEST_RETRY_AFTER_S  # DRF answers it as Retry-After
        super().__init__({"reason": "overloaded", "message": "the workers' backlog is full: retry later (Retry-After), with the "
                                                             "same Idempotency-Key"})


class BatchBodyParser(RawBodyParser):
    """The body of a telemetry batch (decoding is the pipeline's job)."""

    def max_bytes(self) -> int:
        return settings.GRIDTWIN_TELEMETRY_MAX_BATCH_BYTES

    def too_large(self, limit: int) -> Exception:
        return PayloadError("too_large", f"the body exceeds the limit of {limit} bytes", status=413)


class TelemetryBatchViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, PolicyViewSet):
    """Upload a batch of readings as a gateway, and follow what became of it."""

    resource = "batch"
    serializer_class = BatchSerializer
    parser_classes = [BatchBodyParser]

    def get_queryset(self):
        return super().get_queryset().select_related("source").defer("body").order_by("-id")

    @extend_schema(
        request=BATCH_BODIES,
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER,
                                     description="Makes a retried upload a no-op: the same key and body give the first batch.")],
        responses={202: BatchSerializer, 400: OpenApiResponse(description="unreadable body"),
                   413: OpenApiResponse(description="too large"), 415: OpenApiResponse(description="unsupported content type"),
                   422: OpenApiResponse(description="Idempotency-Key reused with another body"),
                   503: OpenApiResponse(description="overloaded: the workers' backlog is full; retry after Retry-After seconds")},
    )
    def create(self, request):
        """Store the batch durably and answer 202 with its id; a worker validates and writes it."""
        source = self.principal.source  # the decision allows uploads only to gateways
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > IDEMPOTENCY_KEY_MAX_CHARS:
            raise ValidationError({"reason": "bad_request", "message": f"Idempotency-Key is longer than {IDEMPOTENCY_KEY_MAX_CHARS}"})
        if services.telemetry_backlog_full():
            raise Overloaded()
        body = request.data if isinstance(request.data, bytes) else b""
        receipt = services.telemetry_batch_receive(source=source, body=body, content_type=request.content_type, idempotency_key=key)
        batch = self.get_queryset().get(pk=receipt.batch.pk)
        data = self.get_serializer(batch).data
        response = Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["url"]})
        if not receipt.created:
            response["Idempotent-Replayed"] = "true"
        return response

    @extend_schema(responses=RejectedReadingSerializer(many=True))
    @action(detail=True, methods=["get"])
    def rejected(self, request, pk=None):
        """The readings of the batch that were not stored, each with its reason, in batch order."""
        batch = self.get_object()
        page = self.paginate_queryset(models.RejectedReading.objects.filter(batch=batch).order_by("position"))
        return self.get_paginated_response(RejectedReadingSerializer(page, many=True).data)


def points_in_scope(meters, keys: list[str] | None = None, feeder: int | None = None) -> dict[int, str]:
    """Meter id → IRI of the requested points among `meters` (the decision's rows); 404 when any of them is not there."""
    if feeder is not None:
        found = dict(meters.filter(feeder_id=feeder).order_by("id").values_list("id", "iri"))
        if not found:
            raise Http404("no such feeder with points")
        return found
    ids = selectors.point_ids_for(meters, set(keys))
    missing = [key for key in keys if key not in ids]
    if missing:
        raise Http404(f"no such point: {missing[0]}")
    return dict(meters.filter(id__in=set(ids.values())).order_by("id").values_list("id", "iri"))


class ReadingsViewSet(PolicyViewSet):
    """Readings of points (or of a feeder's points), raw or aggregated per 15 min, hour or day in the database."""

    resource = "point"

    @extend_schema(parameters=[ReadingsQuerySerializer], responses={200: OpenApiTypes.OBJECT})
    def list(self, request):
        params = ReadingsQuerySerializer.of(request)
        points = points_in_scope(self.get_queryset(), keys=params["point"], feeder=params.get("feeder"))
        spec = QUANTITIES[params["quantity"]]
        try:
            series = selectors.readings_series(point_ids=list(points), spec=spec, start=params["start"], end=params["end"],
                                               resolution=params["resolution"], per_point=params["group"] == "point")
        except selectors.QueryTooLarge as exc:
            raise ValidationError({"reason": "too_many_rows", "message": str(exc)}) from exc
        for entry in series:
            if "point" in entry:
                entry["point_iri"] = points[entry["point"]]
        self.records_out = sum(len(entry["readings"]) for entry in series)
        return Response({"quantity": spec.name, "unit": spec.unit, "unit_iri": spec.unit_iri, "resolution": params["resolution"],
                         "start": params["start"], "end": params["end"], "series": series})


class LatestReadingsViewSet(PolicyViewSet):
    """The latest value of every point of a feeder or a grid (one query on the latest-value table)."""

    resource = "point"

    @extend_schema(parameters=[LatestQuerySerializer], responses={200: OpenApiTypes.OBJECT})
    def list(self, request):
        params = LatestQuerySerializer.of(request)
        meters = self.get_queryset()
        meters = meters.filter(feeder_id=params["feeder"]) if "feeder" in params else meters.filter(grid_id=params["grid"])
        if not meters.exists():
            raise Http404("no such feeder or grid with points")
        code = QUANTITIES[params["quantity"]].code if "quantity" in params else None
        latest = selectors.latest_readings(meters=meters, quantity=code)
        self.records_out = len(latest)
        return Response({"latest": latest})


class QuantitiesViewSet(PolicyViewSet):
    """The quantity vocabulary: canonical unit (QUDT IRI), accepted units and the plausible range of each."""

    resource = "vocabulary"

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def list(self, request):
        return Response({"quantities": [
            {"name": spec.name, "unit": spec.unit, "unit_iri": spec.unit_iri, "accepted_units": sorted(spec.factors),
             "min": spec.min_value, "max": spec.max_value, "interval_energy": spec.energy}
            for spec in QUANTITIES.values()
        ]})
