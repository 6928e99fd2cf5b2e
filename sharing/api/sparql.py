"""Policy-scoped SPARQL over the consumer's permitted graph (SPARQL 1.1 Protocol, query operation only).

`GET /api/v1/shared/sparql?query=…&purpose=…` or `POST` with an `application/sparql-query` body or a form
(`application/x-www-form-urlencoded`, `query=`), plus `?purpose=` (required) and `?agreement=` as for every shared
view. The graph is the twin view the agreement grants, built from the same rows and the same redaction as the REST
views (`permitted_rows`): assets of every type in scope (asset_metadata), buses and branches with their end buses
(topology), violations, hosting capacity — never telemetry, which `/shared/telemetry` serves aggregated. How it is
built, cached, checked and evaluated: `sharing.sparql`. The protocol's `default-graph-uri` / `named-graph-uri` are
refused like FROM: there is one graph. The prefixes gt:, cim:, saref:, rdf:, rdfs: and xsd: need no declaration.
Results: SPARQL JSON (default), CSV, TSV or XML for SELECT; JSON or XML for ASK; Turtle (default), N-Triples, JSON-LD
or RDF/XML for CONSTRUCT and DESCRIBE; 406 otherwise. The agreement answering is named in a
`Link: <uid>; rel="license"` header. Every request is audited with the query text (the audit keeps an excerpt) and the
number of solutions or triples sent, also when the text came in the body and the request was refused.

Graph shape (the REST rows' JSON-LD terms): an asset is `<iri> a <TYPE_CLASSES[type]>` with `gt:<field>` values and
`gt:<reference>` IRIs; a topology branch is also `a gt:branch` with `gt:from_bus` / `gt:to_bus` (its `kind` is its
class); violations and hosting capacity are blank nodes `a gt:Violation` / `a gt:HostingCapacity`. Oxigraph joins a
`?x a gt:branch` pattern before the others: test the type with FILTER EXISTS in selective queries (0.6 ms instead of
~120 ms on a 344k-triple graph, benchmarks/sharing_sparql.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from django.http import HttpResponse, QueryDict
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import parsers, serializers
from rest_framework.exceptions import ParseError, UnsupportedMediaType

from sharing import scope, sparql
from sharing.api.base import PolicyViewSet
from sharing.api.rows import CIM, GT, REFERENCE_KEYS, TYPE_CLASSES
from sharing.api.shared import SHARED_PARAMETERS
from sharing.decisions import VIEW, Decision
from sharing.models import DataCategory
from sharing.rows import asset_rows, hosting_results, hosting_rows, redact, topology_rows, violation_rows
from sharing.scope import MODEL_OF_TYPE
from twin.api.views import RawBodyParser, RdfNegotiationMixin

QUERY_MEDIA_TYPE = "application/sparql-query"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
HOW_TO_SEND = (f"send the query as an {QUERY_MEDIA_TYPE} body, as a form ({FORM_MEDIA_TYPE}) with query=, or with GET ?query=")
DATASET_PARAMETERS = ("default-graph-uri", "named-graph-uri")
# The REST views' JSON-LD terms (sharing.api.rows), plus classes for the rows that have no type there.
ROW_CLASSES = {**TYPE_CLASSES, "violation": GT + "Violation", "hosting_capacity": GT + "HostingCapacity"}
VOCABULARY = sparql.Vocabulary(fields=GT, classes=ROW_CLASSES, predicates={"name": CIM + "IdentifiedObject.name"},
                               references=frozenset(REFERENCE_KEYS))


def permitted_rows(decision: Decision) -> Iterator[dict]:
    """Every row the agreement's REST views would send (`sharing.rows`), redacted as they redact it: the permitted graph's
    content. A branch's kind (line, transformer, switch) is its class, next to gt:branch; violations and hosting
    capacity, which have no type in the REST rows, get theirs."""
    agreement, drop = decision.agreement, decision.obligations.drop_fields
    granted = set(agreement.categories)
    if DataCategory.ASSET_METADATA in granted:
        for model in MODEL_OF_TYPE.values():
            yield from redact(asset_rows(scope.scope_assets(agreement, model), model), drop)
    if DataCategory.TOPOLOGY in granted:
        rows = topology_rows(agreement)
        for row in rows:
            if "kind" in row:
                row["type"] = [row["type"], row.pop("kind")]
        yield from redact(rows, drop)
    if DataCategory.VIOLATIONS in granted:
        yield from redact([{"type": "violation", **row} for row in violation_rows(scope.scope_violations(agreement))], drop)
    if DataCategory.HOSTING_CAPACITY in granted:
        results, _ = hosting_results(agreement, scope.scope_runs(agreement))
        yield from redact([{"type": "hosting_capacity", **row} for row in hosting_rows(results)], drop)


class SparqlQueryParser(RawBodyParser):
    """An application/sparql-query body: the query's bytes, at most 4 bytes per allowed character."""

    media_type = QUERY_MEDIA_TYPE

    def max_bytes(self) -> int:
        return 4 * sparql.limits().max_query_chars

    def too_large(self, limit: int) -> Exception:
        return sparql.SparqlRefused("query_too_long", f"the query body exceeds {limit} bytes", status=413, max_bytes=limit)


class SparqlFormParser(parsers.FormParser):
    """A form with `query=`; a body longer than the longest query percent-encoded is refused before it is read."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        limit = 12 * sparql.limits().max_query_chars + 4096
        if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise sparql.SparqlRefused("query_too_long", f"the form body exceeds {limit} bytes", status=413, max_bytes=limit)
        return super().parse(stream, media_type, parser_context)


class UnsupportedBody(QueryDict):
    """What OtherBodyParser hands the view: a body of another media type, unread. An empty form to whoever reads it as one
    (OAuth2 authentication reads `request.POST` of a multipart body before the view: it was a 500)."""

    def __init__(self, media_type: str | None):
        super().__init__()
        self.media_type = media_type


class OtherBodyParser(parsers.BaseParser):
    """Any other body, left unread: the view refuses it (415, saying what to send) after the decision, so whoever may not
    query gets the same 404 as for any body. (Authentication reads the parsed body of every POST, before the decision.)"""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return UnsupportedBody(media_type)


class SparqlForm(serializers.Serializer):
    """The form body of POST /shared/sparql."""

    query = serializers.CharField(help_text="The SPARQL query (SELECT, ASK, CONSTRUCT or DESCRIBE).")


QUERY_TEXT_PARAMETER = OpenApiParameter("query", str, required=True, description="The SPARQL query (SELECT, ASK, CONSTRUCT or DESCRIBE).")
QUERY_DESCRIPTION = ("SPARQL 1.1 query over the permitted graph of the agreement in force for the purpose: the twin view it grants, "
                     "redacted as the REST views are; no telemetry. Limits: GRIDTWIN_SPARQL_TIMEOUT_S, GRIDTWIN_SPARQL_MAX_ROWS.")
RESULT_TYPES = ("application/sparql-results+json", "text/csv", "text/tab-separated-values", "application/sparql-results+xml",
                "text/turtle", "application/n-triples", "application/ld+json", "application/rdf+xml")
QUERY_RESPONSES = {(200, media): OpenApiTypes.ANY if media.endswith("json") else OpenApiTypes.STR for media in RESULT_TYPES} | {
    400: OpenApiResponse(description="sparql_syntax, sparql_forbidden (with feature), query_timeout, too_many_rows, query_required, "
                                     "purpose_required"),
    403: OpenApiResponse(description="purpose_not_granted"), 404: OpenApiResponse(description="no agreement in force"),
    406: OpenApiResponse(description="no acceptable result format"), 413: OpenApiResponse(description="query_too_long"),
    415: OpenApiResponse(description="unsupported request body")}


class SparqlViewSet(RdfNegotiationMixin, PolicyViewSet):
    """SPARQL over the permitted graph of one agreement: the twin view it grants, redacted as the REST views are."""

    resource = "shared.sparql"
    policy_actions = {"query": VIEW}  # a POSTed query reads, as the protocol's GET does
    parser_classes = [SparqlQueryParser, SparqlFormParser, OtherBodyParser]
    serializer_class = SparqlForm  # what OPTIONS describes for POST
    filter_backends = []
    pagination_class = None
    query_text: str | None = None

    def read_query(self, request) -> str:
        """The query text of a GET (?query=) or a POST (body or form), refusing other bodies and dataset parameters."""
        text = request.query_params.get("query")
        form = {}
        if request.method == "POST":
            data = request.data
            if isinstance(data, UnsupportedBody):
                raise UnsupportedMediaType(data.media_type, detail={"reason": "unsupported_media_type", "message": HOW_TO_SEND})
            if isinstance(data, bytes):
                try:
                    text = data.decode("utf-8") if data else text
                except UnicodeDecodeError as exc:
                    raise sparql.SparqlRefused("sparql_syntax", f"the query is not UTF-8 (byte {exc.start})") from exc
            elif hasattr(data, "get"):
                form = data
                text = data.get("query") or text
        for name in DATASET_PARAMETERS:
            if name in request.query_params or name in form:
                raise sparql.SparqlRefused("sparql_forbidden", f"{name} is not allowed: queries run over the permitted graph only",
                                           feature="FROM")
        self.query_text = text
        return text or ""

    @extend_schema(methods=["GET"], operation_id="v1_shared_sparql_query", parameters=[*SHARED_PARAMETERS, QUERY_TEXT_PARAMETER],
                   description=QUERY_DESCRIPTION, responses=QUERY_RESPONSES)
    @extend_schema(methods=["POST"], operation_id="v1_shared_sparql_query_post", parameters=SHARED_PARAMETERS,
                   description=QUERY_DESCRIPTION, request={QUERY_MEDIA_TYPE: OpenApiTypes.STR, FORM_MEDIA_TYPE: SparqlForm},
                   responses=QUERY_RESPONSES)
    def query(self, request):
        text = self.read_query(request)
        agreement, limits = self.decision.agreement, sparql.limits()
        fingerprint = sparql.data_fingerprint(agreement)

        def build() -> sparql.PermittedGraph:
            return sparql.permitted_graph_build(agreement, fingerprint, rows=lambda: permitted_rows(self.decision), vocabulary=VOCABULARY)

        result, _ = sparql.query_answer(text, request.META.get("HTTP_ACCEPT", ""), cached=sparql.cached_graph(agreement, fingerprint),
                                        build=build, limits=limits)
        self.records_out = result.rows
        response = HttpResponse(result.body, content_type=result.media_type)
        response["Vary"] = "Accept"
        if agreement.uid.isascii() and agreement.uid.isprintable() and not set(agreement.uid) & set('<>" '):
            response["Link"] = f'<{agreement.uid}>; rel="license"'
        return response

    def audit_query(self, request) -> dict:
        """The query parameters with the SPARQL text, also when it came in the body and the request was refused before the view
        read it (e.g. no purpose)."""
        text = self.query_text
        if text is None and request.method == "POST":
            try:
                data = request.data
                text = (data.decode("utf-8", "replace") if isinstance(data, bytes) else
                        data.get("query") if hasattr(data, "get") and not isinstance(data, UnsupportedBody) else None)
            except (ParseError, UnsupportedMediaType, sparql.SparqlRefused):
                text = None
        asked = super().audit_query(request)
        if text is not None:
            asked["query"] = [text]
        return asked
