"""Telemetry API: upload batches (gateways), follow them, query readings and latest values. Views declare; services decide."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from ingest import selectors, services
from ingest.api.serializers import BatchSerializer, LatestQuerySerializer, ReadingsQuerySerializer, RejectedReadingSerializer
from ingest.payloads import MEDIA_TYPES, PayloadError
from twin import models
from twin.api.views import RawBodyParser
from twin.models import QUANTITIES

IDEMPOTENCY_KEY_MAX_CHARS = 200


class TelemetryAuthMixin:
    """Gateways (`Authorization: Gateway <key>`) and users (tokens, sessions) both authenticate here."""

    @staticmethod
    def query(serializer_class, request) -> dict:
        """The request's query parameters, validated by `serializer_class` (400 with the field errors otherwise)."""
        query = serializer_class(data=request.query_params)
        query.is_valid(raise_exception=True)
        return query.validated_data


class BatchBodyParser(RawBodyParser):
    """The body of a telemetry batch (decoding is the pipeline's job)."""

    def max_bytes(self) -> int:
        return settings.GRIDTWIN_TELEMETRY_MAX_BATCH_BYTES

    def too_large(self, limit: int) -> Exception:
        return PayloadError("too_large", f"the body exceeds the limit of {limit} bytes", status=413)


class TelemetryBatchViewSet(TelemetryAuthMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Upload a batch of readings as a gateway, and follow what became of it."""

    serializer_class = BatchSerializer
    parser_classes = [BatchBodyParser]

    def get_queryset(self):
        return selectors.batches_visible_to(self.request.user).order_by("-id")

    @extend_schema(
        request={media_type: OpenApiTypes.BINARY for media_type in MEDIA_TYPES},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER,
                                     description="Makes a retried upload a no-op: the same key and body give the first batch.")],
        responses={202: BatchSerializer, 400: OpenApiResponse(description="unreadable body"),
                   413: OpenApiResponse(description="too large"), 415: OpenApiResponse(description="unsupported content type"),
                   422: OpenApiResponse(description="Idempotency-Key reused with another body")},
    )
    def create(self, request):
        """Store the batch durably and answer 202 with its id; a worker validates and writes it."""
        source = request.auth if isinstance(request.auth, models.TelemetrySource) else None
        if source is None:
            raise PermissionDenied("only a telemetry source (Authorization: Gateway <key>) uploads readings")
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > IDEMPOTENCY_KEY_MAX_CHARS:
            raise ValidationError({"reason": "bad_request", "message": f"Idempotency-Key is longer than {IDEMPOTENCY_KEY_MAX_CHARS}"})
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


def points_in_scope(request, keys: list[str] | None = None, feeder: int | None = None) -> dict[int, str]:
    """Meter id → IRI of the requested points the principal may see; 404 when any of them is out of scope."""
    participant_ids = selectors.participant_ids_of(request.user)
    meters = selectors.meters_of(participant_ids)
    if feeder is not None:
        meters = meters.filter(feeder_id=feeder)
        if not (models.Feeder.objects.filter(pk=feeder, grid__owner__in=participant_ids).exists() or meters.exists()):
            raise Http404("no such feeder")
        return dict(meters.order_by("id").values_list("id", "iri"))
    found = selectors.point_ids_for(participant_ids, set(keys))
    missing = [key for key in keys if key not in found]
    if missing:
        raise Http404(f"no such point: {missing[0]}")
    return dict(meters.filter(id__in=set(found.values())).order_by("id").values_list("id", "iri"))


class ReadingsView(TelemetryAuthMixin, APIView):
    """Readings of points (or of a feeder's points), raw or aggregated per 15 min, hour or day in the database."""

    @extend_schema(parameters=[ReadingsQuerySerializer], responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        params = self.query(ReadingsQuerySerializer, request)
        points = points_in_scope(request, keys=params["point"], feeder=params.get("feeder"))
        spec = QUANTITIES[params["quantity"]]
        try:
            series = selectors.readings_series(point_ids=list(points), spec=spec, start=params["start"], end=params["end"],
                                               resolution=params["resolution"], per_point=params["group"] == "point")
        except selectors.QueryTooLarge as exc:
            raise ValidationError({"reason": "too_many_rows", "message": str(exc)}) from exc
        for entry in series:
            if "point" in entry:
                entry["point_iri"] = points[entry["point"]]
        return Response({"quantity": spec.name, "unit": spec.unit, "unit_iri": spec.unit_iri, "resolution": params["resolution"],
                         "start": params["start"], "end": params["end"], "series": series})


class LatestReadingsView(TelemetryAuthMixin, APIView):
    """The latest value of every point of a feeder or a grid (one query on the latest-value table)."""

    @extend_schema(parameters=[LatestQuerySerializer], responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        params = self.query(LatestQuerySerializer, request)
        participant_ids = selectors.participant_ids_of(request.user)
        meters = selectors.meters_of(participant_ids)
        if "feeder" in params:
            meters = meters.filter(feeder_id=params["feeder"])
            container = models.Feeder.objects.filter(pk=params["feeder"], grid__owner__in=participant_ids)
        else:
            meters = meters.filter(grid_id=params["grid"])
            container = models.Grid.objects.filter(pk=params["grid"], owner__in=participant_ids)
        if not container.exists() and not meters.exists():
            raise Http404("no such feeder or grid")
        code = QUANTITIES[params["quantity"]].code if "quantity" in params else None
        return Response({"latest": selectors.latest_readings(meters=meters, quantity=code)})


class QuantitiesView(TelemetryAuthMixin, APIView):
    """The quantity vocabulary: canonical unit (QUDT IRI), accepted units and the plausible range of each."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response({"quantities": [
            {"name": spec.name, "unit": spec.unit, "unit_iri": spec.unit_iri, "accepted_units": sorted(spec.factors),
             "min": spec.min_value, "max": spec.max_value, "interval_energy": spec.energy}
            for spec in QUANTITIES.values()
        ]})
