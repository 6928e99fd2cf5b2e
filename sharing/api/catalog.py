"""The catalog of datasets (DCAT 3): what a consumer's agreements grant and which offers it may request.

GET /api/v1/shared/catalog lists the calling consumer's datasets (`sharing.catalog`) as a `dcat:Catalog` page;
GET /api/v1/shared/catalog/<dataset id> is one `dcat:Dataset`. JSON-LD with an inline context is the representation
(also for `Accept: application/json` or `*/*`); `Accept: text/turtle` gives the same graph as Turtle. No purpose is
declared: any consumer discovers its own catalog, and only its own.
"""

from __future__ import annotations

import orjson
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound

from sharing import catalog
from sharing.api.base import PAGE_PARAMETERS, PolicyViewSet
from sharing.api.rows import negotiated_format
from sharing.datasets import parse_dataset_id
from sharing.models import DataCategory
from twin.api.serializers import QuerySerializer
from twin.api.views import RdfNegotiationMixin

NOT_IN_CATALOG = "no such dataset"
# drf-spectacular names the `pk` path variable `id` (SCHEMA_COERCE_PATH_PK): described under that name.
DATASET_ID_PARAMETER = OpenApiParameter("id", str, OpenApiParameter.PATH,
                                        description="Dataset id, e.g. g12-f34-telemetry (`dct:identifier` in the catalog).")

# JSON-LD is the representation (also for Accept: application/json and */*); Turtle when asked for.
CATALOG_RESPONSES = {(200, "application/ld+json"): OpenApiTypes.OBJECT, (200, "text/turtle"): OpenApiTypes.STR}


class CatalogQuery(QuerySerializer):
    """The catalog's filter (`sharing.catalog.CatalogFilter`): every given term must hold."""

    category = serializers.ChoiceField(choices=DataCategory.values, required=False, help_text="Only datasets of this data category.")
    provider = serializers.CharField(max_length=500, required=False, help_text="Only datasets of this provider (participant IRI).")
    grid = serializers.CharField(max_length=500, required=False, help_text="Only datasets of this grid (IRI).")
    feeder = serializers.CharField(max_length=500, required=False, help_text="Only datasets of this feeder (IRI).")
    granted = serializers.ChoiceField(choices=["true", "false"], required=False,
                                      help_text="true: datasets an agreement in force grants; false: those you may only request.")
    q = serializers.CharField(max_length=200, required=False, help_text="Only datasets whose title contains this text (any case).")

    @classmethod
    def filter_of(cls, request) -> catalog.CatalogFilter:
        """The request's catalog filter; an invalid value is 400 `invalid_filter` (QuerySerializer)."""
        terms = cls.of(request)
        granted = terms.get("granted")
        return catalog.CatalogFilter(category=terms.get("category"), provider=terms.get("provider"), grid=terms.get("grid"),
                                     feeder=terms.get("feeder"), granted=None if granted is None else granted == "true",
                                     text=terms.get("q"))


class CatalogViewSet(RdfNegotiationMixin, PolicyViewSet):
    """DCAT 3 catalog of the calling consumer: granted and requestable datasets, their distributions and ODRL policies."""

    resource = "shared.catalog"
    filter_backends = []  # the catalog's own filter (CatalogQuery), over datasets rather than rows of a model
    # Any one path segment reaches the view, so a malformed id gets the same 404 as an absent or out-of-scope one.
    lookup_value_regex = r"[^/]+"

    def links(self) -> catalog.Links:
        """The absolute URLs the catalog points at, resolved once for the request."""
        absolute = self.request.build_absolute_uri
        return catalog.Links(catalog=absolute(reverse("shared-catalog-list")).rstrip("/"),
                             endpoints={name: absolute(reverse(name)) for name in catalog.ENDPOINT_NAMES},
                             agreements=absolute(reverse("agreement-list")).rstrip("/") + "/", schema=absolute(reverse("schema")))

    def respond(self, document: dict, records: int) -> HttpResponse:
        """JSON-LD (the default here, also for application/json and */*), or the same graph as Turtle."""
        self.records_out = records
        if negotiated_format(self.request.META.get("HTTP_ACCEPT", "")) == "turtle":
            return HttpResponse(catalog.as_turtle(document), content_type="text/turtle; charset=utf-8")
        return HttpResponse(orjson.dumps(document), content_type="application/ld+json")

    @extend_schema(operation_id="v1_shared_catalog_list", parameters=[CatalogQuery, *PAGE_PARAMETERS], responses=CATALOG_RESPONSES)
    def list(self, request):
        """Your catalog: the datasets your agreements in force grant and those of offers shown to you, paginated."""
        wanted = CatalogQuery.filter_of(request)
        participant = self.principal.participant
        entries = [e for e in catalog.consumer_catalog(participant) if wanted.admits(e)]
        page = self.paginate_queryset(entries)
        meta = {"count": self.paginator.count, "limit": self.paginator.limit, "offset": self.paginator.offset,
                "next": self.paginator.get_next_link(), "previous": self.paginator.get_previous_link()}
        document = catalog.catalog_document(page, consumer=participant, links=self.links(), page=meta)
        return self.respond(document, len(page))

    @extend_schema(parameters=[DATASET_ID_PARAMETER], responses=CATALOG_RESPONSES)
    def retrieve(self, request, pk=None):
        """One dataset of your catalog; 404 alike for a malformed id, an absent dataset and one not in your catalog."""
        key = parse_dataset_id(pk)
        found = catalog.consumer_catalog(self.principal.participant, only=key) if key is not None else []
        if not found:
            raise NotFound(NOT_IN_CATALOG)
        return self.respond(catalog.dataset_document(found[0], links=self.links()), 1)
