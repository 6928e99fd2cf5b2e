"""Operator API: publish grids as RDF, read them back, browse assets. Views declare; services decide."""

from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, parsers, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotAcceptable, ParseError
from rest_framework.response import Response

from ontology import limits
from ontology.errors import EmptyUpload, UploadTooLarge
from ontology.parsing import parse_rdf
from ontology.serialization import FORMATS, MEDIA_TYPE_FORMATS, serialize
from sharing.api.base import PolicyViewSet
from twin import services
from twin.api import history
from twin.api.errors import ErrorSerializer
from twin.api.serializers import GridSerializer, ImportResultSerializer, QuerySerializer, asset_serializer

RDF_MEDIA_TYPES = sorted(MEDIA_TYPE_FORMATS)


class RawBodyParser(parsers.BaseParser):
    """Hands the raw body to the view (decoding is the domain layer's job).

    A body whose Content-Length is over `max_bytes()` is refused before a byte of it is read; otherwise at
    most `max_bytes() + 1` bytes are read, so a body without an honest length is refused too.
    """

    media_type = "*/*"
    body_required = True  # the schema says so (twin.api.errors.ApiSchema): without a body there is nothing to take

    def max_bytes(self) -> int:
        raise NotImplementedError

    def too_large(self, limit: int) -> Exception:
        raise NotImplementedError

    def parse(self, stream, media_type=None, parser_context=None):
        limit = self.max_bytes()
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
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
    """A JSON body by the rules of `json_body` (at most 1 MB and 32 levels, UTF-8, each key once)."""

    max_bytes = 1024 * 1024
    max_depth = 32

    def parse(self, stream, media_type=None, parser_context=None):
        return json_body(stream.read(self.max_bytes + 1) if stream is not None else b"")


def json_body(data: bytes):
    """The JSON value of a request body: at most 1 MB (413) and 32 levels of nesting, UTF-8, no key named twice in an object
    (never read last-wins); anything else is a 400 `invalid_json`, never a RecursionError. The one rule for every JSON body
    of the API. (NUL and unpaired surrogates are the fields' to refuse, naming the field: IriField, DRF's CharField.)"""
    limit, depth = JsonBodyParser.max_bytes, JsonBodyParser.max_depth
    if len(data) > limit:
        raise UploadTooLarge(f"a JSON body has at most {limit} bytes")
    if not data.strip():
        raise ParseError({"reason": "invalid_json", "message": "the body is empty: a JSON object was expected"})
    try:
        found = json.loads(data.decode("utf-8"), parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except _RepeatedKey as exc:
        raise ParseError({"reason": "invalid_json", "message": str(exc)}) from exc
    except RecursionError as exc:
        raise ParseError({"reason": "invalid_json", "message": f"JSON nested deeper than {depth} levels"}) from exc
    except ValueError as exc:  # UnicodeDecodeError included: JSON between systems is UTF-8 (RFC 8259)
        raise ParseError({"reason": "invalid_json", "message": f"the body is not JSON in UTF-8: {exc}"}) from exc
    level, todo = 0, [found] if isinstance(found, dict | list) else []
    while todo:  # one level at a time: no recursion on a hostile body
        level += 1
        if level > depth:
            raise ParseError({"reason": "invalid_json", "message": f"JSON nested deeper than {depth} levels"})
        todo = [child for item in todo for child in (item.values() if isinstance(item, dict) else item) if isinstance(child, dict | list)]
    return found


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _RepeatedKey(f"an object names {repeated[:100]!r} more than once")
    return found


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


class ReportQuery(QuerySerializer):
    """The query of an RDF upload."""

    report = serializers.ChoiceField(choices=["turtle"], required=False, help_text="On 422, answer the SHACL report graph as Turtle.")


class RdfFormatQuery(QuerySerializer):
    """The query of an RDF export."""

    format = serializers.ChoiceField(choices=sorted(FORMATS), required=False, help_text="Overrides the Accept header.")


# What the RDF syntaxes are in the schema: JSON-LD is JSON (any JSON value), the others text.
RDF_RESPONSE_TYPES = {media_type: OpenApiTypes.ANY if media_type.endswith("json") else OpenApiTypes.STR for media_type in RDF_MEDIA_TYPES}
SHACL_RESPONSES = {
    (422, "application/json"): OpenApiResponse(ErrorSerializer, description="SHACL violations: the first ones listed, all counted"),
    (422, "text/turtle"): OpenApiResponse(OpenApiTypes.STR, description="with ?report=turtle or Accept: text/turtle, the SHACL "
                                                                        "report graph"),
}


def read_upload(request):
    """Parse the request body (read by RdfUploadParser, which enforces the size limit) as RDF, the query checked first."""
    ReportQuery.of(request)
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
    if ReportQuery.of(request).get("report") == "turtle" or request.META.get("HTTP_ACCEPT", "").startswith("text/turtle"):
        return HttpResponse(exc.report.as_turtle(limit=limits.max_report_results()), status=422, content_type="text/turtle; charset=utf-8")
    listed = limits.max_reported_violations()
    body = {"reason": exc.reason, "message": exc.message, **exc.report.summary(limit=listed)}
    if body["truncated"]:
        body["message"] += (f"; the first {listed} of {body['result_count']} results are listed, by_constraint counts them all, and"
                            f" ?report=turtle answers the SHACL report graph with the first {limits.max_report_results()}")
    return Response(body, status=422)


UPLOAD_PARAMETERS = [
    OpenApiParameter("participant", str, description="IRI of the participant to act for (when the user acts for several)."),
    ReportQuery,
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
                   **SHACL_RESPONSES, 413: OpenApiResponse(description="too large, too many triples or too long to parse"),
                   415: OpenApiResponse(description="unsupported content type")},
    )
    def create(self, request):
        graph = read_upload(request)
        try:
            result = services.grid_import_graph(graph=graph, participant=self.principal.participant, source="upload",
                                                author=history.api_author(request, self.principal, "upload"))
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
        parameters=[RdfFormatQuery, history.RdfVersionQuery],
        responses={**{(200, media_type): schema for media_type, schema in RDF_RESPONSE_TYPES.items()},
                   404: OpenApiResponse(description="no such grid, or no such version"),
                   406: OpenApiResponse(description="no RDF syntax the Accept header takes (see ?format=)")},
    )
    @action(detail=True, methods=["get"])
    def rdf(self, request, pk=None):
        """The grid as RDF, by content negotiation (Turtle when nothing is asked for); `?version=N` exports version N."""
        grid = self.get_object()
        format_name = RdfFormatQuery.of(request).get("format") or negotiate(request.META.get("HTTP_ACCEPT", ""))
        if format_name not in FORMATS:
            raise NotAcceptable(f"can serve {', '.join(RDF_MEDIA_TYPES)}")
        body = serialize(history.rdf_graph(grid, request), format_name)
        return HttpResponse(body, content_type=f"{FORMATS[format_name][0]}; charset=utf-8")

    @extend_schema(
        request={media_type: OpenApiTypes.BINARY for media_type in RDF_MEDIA_TYPES},
        parameters=UPLOAD_PARAMETERS[1:],
        responses={200: ImportResultSerializer, **SHACL_RESPONSES},
    )
    @action(detail=True, methods=["post"], parser_classes=[RdfUploadParser])
    def changes(self, request, pk=None):
        """Upsert the assets described in the body (each complete, with its terminals) into this grid."""
        grid = self.get_object()
        graph = read_upload(request)
        try:
            result = services.grid_apply_changes(grid=grid, graph=graph, author=history.api_author(request, self.principal, "changes"))
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
    """Read-only list and detail of one kind of asset, limited to the grids you operate; retired rows are no longer the grid's."""

    resource = "asset"

    def get_queryset(self):
        return super().get_queryset().filter(retired_at__isnull=True).order_by("id")


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
