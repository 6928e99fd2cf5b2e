"""History API: the versions of a grid, the diff of one to the one before or between any two, a past version as RDF.

Declarations on the one base viewset: a request is decided as a read of the grid (`resource = "grid"`), and the grid
comes from the decision's rows, so a grid out of the caller's scope is 404 like an absent one, and so are its versions.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from sharing.api.base import PolicyViewSet
from twin import history, models, selectors
from twin.api.serializers import QuerySerializer

MAX_NUMBER = 2**31 - 1  # larger than any version number or grid id stored


class AuthorSerializer(serializers.Serializer):
    participant = serializers.CharField(allow_null=True, help_text="IRI of the participant the write acted for.")
    user = serializers.CharField(allow_null=True, help_text="Username of the user who made it.")
    credential = serializers.CharField(help_text="The credential it came with (blank for commands and migrations).")


class CountsSerializer(serializers.Serializer):
    added = serializers.IntegerField()
    changed = serializers.IntegerField()
    retired = serializers.IntegerField()


class AssetRefSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="The twin model: Line, Bus, Load …")
    iri = serializers.CharField()


class ChangedAssetSerializer(AssetRefSerializer):
    fields = serializers.ListField(child=serializers.CharField(), help_text="The fields whose values differ.")


class DiffSerializer(serializers.Serializer):
    """What changed from one version to another: assets added, changed (which fields) and retired (no longer in the grid)."""

    from_version = serializers.IntegerField(allow_null=True, help_text="None for the first version (everything is added).")
    to_version = serializers.IntegerField()
    counts = CountsSerializer()
    grid_fields = serializers.ListField(child=serializers.CharField(), help_text="The grid's own fields that changed (name, owner).")
    added = AssetRefSerializer(many=True)
    changed = ChangedAssetSerializer(many=True)
    retired = AssetRefSerializer(many=True)


class VersionSerializer(serializers.ModelSerializer):
    """One version of a grid: number, when, by whom and through which path, its content hash and what it changed."""

    hash = serializers.CharField(source="content_hash", help_text="SHA-256 of the version's canonical content (hex).")
    created_by = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField()

    class Meta:
        model = models.GridVersion
        fields = ["number", "created_at", "created_by", "via", "hash", "counts"]

    @extend_schema_field(AuthorSerializer)
    def get_created_by(self, version: models.GridVersion) -> dict:
        participant, user = version.created_by_participant, version.created_by_user
        return {"participant": participant.iri if participant else None, "user": user.get_username() if user else None,
                "credential": version.created_by_credential}

    @extend_schema_field(CountsSerializer)
    def get_counts(self, version: models.GridVersion) -> dict:
        return version.summary.get("counts", {"added": 0, "changed": 0, "retired": 0})


class VersionDetailSerializer(VersionSerializer):
    diff = DiffSerializer(help_text="The diff to the version before.")

    class Meta(VersionSerializer.Meta):
        fields = [*VersionSerializer.Meta.fields, "diff"]


class DiffQuery(QuerySerializer):
    """`from` and `to` are Python keywords: declared below."""


DiffQuery._declared_fields.update({
    "from": serializers.IntegerField(min_value=1, max_value=MAX_NUMBER, help_text="Number of the version to diff from."),
    "to": serializers.IntegerField(min_value=1, max_value=MAX_NUMBER, help_text="Number of the version to diff to."),
})


class RdfVersionQuery(QuerySerializer):
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_NUMBER,
                                       help_text="Number of a past version to export (default: the grid as it is now).")


GRID_PK = OpenApiParameter("grid_pk", int, OpenApiParameter.PATH, description="Id of the grid.")
NUMBER = OpenApiParameter("number", int, OpenApiParameter.PATH, description="Number of the version (1, 2, …).")
NOT_FOUND = OpenApiResponse(description="no such grid (or not yours), or no such version")


def api_author(request, principal, via: str) -> history.Author:
    """The author of a version an API write records: the participant it acts for, the user and the credential's label."""
    return history.Author(via=via, participant=principal.participant, user=request.user, credential=principal.credential_label)


def _number(text: str) -> int:
    """A path number that can name a stored row, else 404 (the route admits digits only)."""
    value = int(text)
    if not 1 <= value <= MAX_NUMBER:
        raise NotFound("no such version")
    return value


def rdf_graph(grid: models.Grid, request):
    """The graph `GET /grids/{id}/rdf` serves: the grid now, or with `?version=N` that version (404 if it has none)."""
    number = RdfVersionQuery.of(request).get("version")
    graph = selectors.grid_graph(grid) if number is None else history.version_graph(grid, number)
    if graph is None:
        raise NotFound(f"the grid has no version {number}")
    return graph


class GridVersionViewSet(mixins.ListModelMixin, PolicyViewSet):
    """The versions of a grid you may read: list them, read one with its diff to the one before, or diff any two."""

    resource = "grid"
    serializer_class = VersionSerializer
    lookup_field = "number"
    lookup_value_regex = "[0-9]+"

    def get_queryset(self):
        grids = super().get_queryset()  # the decision's rows: the grids one may read
        if self.decision is None:  # schema generation: no rows
            return models.GridVersion.objects.none()
        return (models.GridVersion.objects.filter(grid=self.route_row(grids, "grid_pk")).defer("snapshot")
                .select_related("created_by_participant", "created_by_user").order_by("number"))

    @extend_schema(parameters=[GRID_PK], responses={200: VersionSerializer(many=True), 404: NOT_FOUND})
    def list(self, request, *args, **kwargs):
        """The grid's versions, oldest first: number, time, author, content hash and counts of what each changed."""
        return super().list(request, *args, **kwargs)

    @extend_schema(parameters=[GRID_PK, NUMBER], responses={200: VersionDetailSerializer, 404: NOT_FOUND})
    def retrieve(self, request, grid_pk=None, number=None):
        """One version with its diff to the version before (the first version adds everything)."""
        version = self.get_queryset().filter(number=_number(number)).first()
        if version is None:
            raise NotFound("no such version")
        previous = models.GridVersion.objects.filter(grid_id=version.grid_id, number__lt=version.number).order_by("-number").first()
        diff = history.content_diff(history.version_content(previous) if previous else None, history.version_content(version))
        body = VersionSerializer(version).data | {"diff": {"from_version": previous.number if previous else None,
                                                           "to_version": version.number, **diff}}
        return Response(body)

    @extend_schema(parameters=[GRID_PK, DiffQuery], responses={200: DiffSerializer, 400: OpenApiResponse(description="invalid_filter"),
                                                               404: NOT_FOUND})
    @action(detail=False, methods=["get"])
    def diff(self, request, grid_pk=None):
        """The diff between any two versions: `?from=N&to=M` (either order; from = to is an empty diff)."""
        grid = self.route_row(self.decision.queryset, "grid_pk")  # out of scope is 404 before anything is said of the query
        query = DiffQuery.of(request)  # both required: a missing one is a 400 invalid_filter
        try:
            diff = history.versions_diff(grid, query["from"], query["to"])
        except KeyError as exc:
            raise NotFound(f"the grid has no version {exc.args[0]}") from exc
        return Response({"from_version": query["from"], "to_version": query["to"], **diff})
