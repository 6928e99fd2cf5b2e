"""Operator API: publish grids as RDF, read them back, browse assets. Views declare; services decide."""

from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, parsers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotAcceptable, ParseError
from rest_framework.response import Response

from ontology import limits
from ontology.errors import EmptyUpload, UploadTooLarge
from ontology.parsing import parse_rdf
from ontology.serialization import FORMATS, MEDIA_TYPE_FORMATS, serialize
from sharing.api.base import PolicyViewSet
from twin import selectors, services
from twin.api.serializers import GridSerializer, ImportResultSerializer, asset_serializer

RDF_MEDIA_TYPES = sorted(MEDIA_TYPE_FORMATS)


class RawBodyParser(parsers.BaseParser):
    """Hands the raw body to the view (decoding is the domain layer's job).

    A body whose Content-Length is over `max_bytes()` is refused before a byte of it is read; otherwise at
    most `max_bytes() + 1` bytes are read, so a body without an honest length is refused too.
    """

    media_type = "*/*"

    def max_bytes(self) -> int:
        raise NotImplementedError

    def too_large(self, limit: int) -> Exception:
        raise NotImplementedError

    def parse(self, stream, media_type=None, parser_context=None):
        limit = self.max_bytes()
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise self.too_large(limit)
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise self.too_large(limit)
        return data


class RdfUploadParser(RawBodyParser):
    """The body of an RDF upload; the RDF parser itself runs in the ontology layer."""

    def max_bytes(self) -> int:
        return settings.GRIDTWIN_MAX_UPLOAD_BYTES

    def too_large(self, limit: int) -> Exception:
        return UploadTooLarge(f"the body exceeds the limit of {limit} bytes")


class JsonBodyParser(parsers.JSONParser):
    """A JSON body of at most 1 MB and 32 levels of nesting: deeper or larger is a 400 `invalid_json`, never a RecursionError."""

    max_bytes = 1024 * 1024
    max_depth = 32

    def parse(self, stream, media_type=None, parser_context=None):
        data = stream.read(self.max_bytes + 1) if stream is not None else b""
        if len(data) > self.max_bytes:
            raise UploadTooLarge(f"a JSON body has at most {self.max_bytes} bytes")
        if not data.strip():
            raise ParseError({"reason": "invalid_json", "message": "the body is empty: a JSON object was expected"})
        try:
            found = json.loads(data, parse_constant=_no_constant)
        except RecursionError as exc:
            raise ParseError({"reason": "invalid_json", "message": f"JSON nested deeper than {self.max_depth} levels"}) from exc
        except ValueError as exc:
            raise ParseError({"reason": "invalid_json", "message": f"the body is not JSON: {exc}"}) from exc
        level, todo = 0, [found] if isinstance(found, dict | list) else []
        while todo:  # one level at a time: no recursion on a hostile body
            level += 1
            if level > self.max_depth:
                raise ParseError({"reason": "invalid_json", "message": f"JSON nested deeper than {self.max_depth} levels"})
            todo = [child for item in todo for child in (item.values() if isinstance(item, dict) else item)
                    if isinstance(child, dict | list)]
        return found


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_upload(request):
    """Parse the request body (read by RdfUploadParser, which enforces the size limit) as RDF."""
    limit = settings.GRIDTWIN_MAX_UPLOAD_BYTES
    data = request.data if isinstance(request.data, bytes) else b""
    if not data:
        raise EmptyUpload("the body is empty")
    return parse_rdf(data, request.content_type, max_bytes=limit, max_literal_chars=settings.GRIDTWIN_MAX_LITERAL_CHARS)


def shacl_response(request, exc: services.ShapeViolation) -> Response | HttpResponse:
    """A 422 with the violations as JSON, or the SHACL report graph as Turtle when asked for.

    Both are cut (ontology.limits): the JSON lists the first `GRIDTWIN_MAX_REPORTED_VIOLATIONS` results with the counts
    of all of them per shape and path, the Turtle graph the first `GRIDTWIN_MAX_REPORT_RESULTS`.
    """
    if request.query_params.get("report") == "turtle" or request.META.get("HTTP_ACCEPT", "").startswith("text/turtle"):
        return HttpResponse(exc.report.as_turtle(limit=limits.max_report_results()), status=422, content_type="text/turtle; charset=utf-8")
    listed = limits.max_reported_violations()
    body = {"reason": exc.reason, "message": exc.message, **exc.report.summary(limit=listed)}
    if body["truncated"]:
        body["message"] += (f"; the first {listed} of {body['result_count']} results are listed, by_constraint counts them all, and"
                            f" ?report=turtle answers the SHACL report graph with the first {limits.max_report_results()}")
    return Response(body, status=422)


UPLOAD_PARAMETERS = [
    OpenApiParameter("participant", str, description="IRI of the participant to act for (when the user acts for several)."),
    OpenApiParameter("report", str, enum=["turtle"], description="On 422, answer the SHACL report graph as Turtle."),
]


class RdfNegotiationMixin:
    """RDF responses are negotiated by the view itself; DRF only renders errors (as JSON), never 406s first."""

    def perform_content_negotiation(self, request, force=False):
        return super().perform_content_negotiation(request, force=True)


class ModelUploadViewSet(RdfNegotiationMixin, PolicyViewSet):
    """Publish a grid: POST a whole model as Turtle, JSON-LD, RDF/XML or N-Triples."""

    resource = "grid"
    parser_classes = [RdfUploadParser]
    serializer_class = ImportResultSerializer

    @extend_schema(
        request={media_type: OpenApiTypes.BINARY for media_type in RDF_MEDIA_TYPES},
        parameters=UPLOAD_PARAMETERS,
        responses={201: ImportResultSerializer, 200: ImportResultSerializer, 409: OpenApiResponse(description="IRI conflict"),
                   422: OpenApiResponse(description="SHACL violations"), 413: OpenApiResponse(description="too large"),
                   415: OpenApiResponse(description="unsupported content type")},
    )
    def create(self, request):
        graph = read_upload(request)
        try:
            result = services.grid_import_graph(graph=graph, participant=self.principal.participant, source="upload")
        except services.ShapeViolation as exc:
            return shacl_response(request, exc)
        return Response(result.as_dict(), status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class GridViewSet(RdfNegotiationMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, PolicyViewSet):
    """The grids of the participant you act for; export one as RDF or apply a partial change."""

    resource = "grid"
    policy_actions = {"changes": "change"}
    serializer_class = GridSerializer
    filterset_fields = {"name": ["exact", "icontains"], "iri": ["exact"], "owner": ["exact"]}

    def get_queryset(self):
        return super().get_queryset().select_related("owner").order_by("id")

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=sorted(FORMATS), description="Overrides the Accept header.")],
        responses={(200, media_type): OpenApiTypes.BINARY for media_type in RDF_MEDIA_TYPES},
    )
    @action(detail=True, methods=["get"])
    def rdf(self, request, pk=None):
        """The grid as RDF, by content negotiation (Turtle when nothing is asked for)."""
        grid = self.get_object()
        format_name = request.query_params.get("format") or negotiate(request.META.get("HTTP_ACCEPT", ""))
        if format_name not in FORMATS:
            raise NotAcceptable(f"can serve {', '.join(RDF_MEDIA_TYPES)}")
        body = serialize(selectors.grid_graph(grid), format_name)
        return HttpResponse(body, content_type=f"{FORMATS[format_name][0]}; charset=utf-8")

    @extend_schema(
        request={media_type: OpenApiTypes.BINARY for media_type in RDF_MEDIA_TYPES},
        parameters=UPLOAD_PARAMETERS[1:],
        responses={200: ImportResultSerializer, 422: OpenApiResponse(description="SHACL violations")},
    )
    @action(detail=True, methods=["post"], parser_classes=[RdfUploadParser])
    def changes(self, request, pk=None):
        """Upsert the assets described in the body (each complete, with its terminals) into this grid."""
        grid = self.get_object()
        graph = read_upload(request)
        try:
            result = services.grid_apply_changes(grid=grid, graph=graph)
        except services.ShapeViolation as exc:
            return shacl_response(request, exc)
        return Response(result.as_dict())


def negotiate(accept: str) -> str | None:
    """The best RDF format for an Accept header (q-values honoured; */* and empty mean Turtle)."""
    choices = []
    for position, item in enumerate(accept.split(",")):
        media_type, *params = (part.strip() for part in item.split(";"))
        quality = next((float(p[2:]) for p in params if p.startswith("q=") and _is_number(p[2:])), 1.0)
        choices.append((-quality, position, media_type.lower()))
    for quality, _, media_type in sorted(choices):
        if quality == 0:
            continue
        if media_type in MEDIA_TYPE_FORMATS:
            return MEDIA_TYPE_FORMATS[media_type]
        if media_type in ("*/*", "text/*", "application/*", ""):
            return "turtle"
    return None if accept.strip() else "turtle"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class AssetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, PolicyViewSet):
    """Read-only list and detail of one kind of asset, limited to the grids you operate."""

    resource = "asset"

    def get_queryset(self):
        return super().get_queryset().order_by("id")


def asset_viewset(model, extra_filters: tuple[str, ...] = ()) -> type[AssetViewSet]:
    """A read-only viewset for one twin model, filterable by grid, feeder, name and IRI."""
    filters = {"grid": ["exact"], "iri": ["exact"], "name": ["exact", "icontains"]}
    for name in ("feeder", "in_service", "kind", *extra_filters):
        if any(f.name == name for f in model._meta.get_fields()):
            filters[name] = ["exact"]
    return type(
        f"{model.__name__}ViewSet",
        (AssetViewSet,),
        {"asset_model": model, "serializer_class": asset_serializer(model), "filterset_fields": filters,
         "__doc__": f"{model._meta.verbose_name_plural.capitalize()} of the grids you operate."},
    )
