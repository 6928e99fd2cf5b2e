"""CGMES export API: `GET /grids/{id}/cgmes` answers a zip of the grid's EQ, TP, SSH (and SV from `?run=`) profiles.

Declared on the one base viewset like the RDF export: the request is decided as a read of the grid (`resource = "grid"`)
and the grid comes from the decision's rows, so a grid out of the caller's scope is 404 like an absent one. A run that
is not a succeeded run of the grid, or equipment the export cannot write, is a 422 in the error shape naming it.
"""

from __future__ import annotations

import io
import zipfile

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers

from ontology.converters.cgmes_export import VERSIONS
from sharing.api.base import PolicyViewSet
from twin import models
from twin.api.history import GRID_PK, MAX_NUMBER
from twin.api.serializers import QuerySerializer
from twin.cgmes_export import grid_cgmes_profiles, profile_file_name


class CgmesQuery(QuerySerializer):
    cgmes_version = serializers.ChoiceField(choices=VERSIONS, required=False, help_text="CGMES version (default 3.0).")
    run = serializers.IntegerField(required=False, min_value=1, max_value=MAX_NUMBER,
                                   help_text="Id of a succeeded load-flow run of the grid: its bus voltages become the SV profile.")


class GridCgmesViewSet(PolicyViewSet):
    """The grid as CGMES 2.4.15 or 3.0 profiles, in one zip."""

    resource = "grid"

    def perform_content_negotiation(self, request, force=False):
        return super().perform_content_negotiation(request, force=True)  # the zip is the view's; DRF renders errors only

    def get_queryset(self):
        return models.Grid.objects.none() if self.decision is None else super().get_queryset()

    @extend_schema(
        parameters=[GRID_PK, CgmesQuery],
        responses={(200, "application/zip"): OpenApiTypes.BINARY, 404: OpenApiResponse(description="no such grid (or not yours)"),
                   422: OpenApiResponse(description="run_not_exportable, or conversion_error naming equipment the export cannot write")},
    )
    def list(self, request, grid_pk=None):
        """A zip of EQ, TP, SSH (and SV with `?run=`) RDF/XML files with their FullModel headers."""
        grid = self.route_row(self.decision.queryset, "grid_pk")
        query = CgmesQuery.of(request)
        version = query.get("cgmes_version", "3.0")
        profiles = grid_cgmes_profiles(grid, version=version, run_id=query.get("run"))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for profile, body in profiles.items():
                archive.writestr(profile_file_name(grid, version, profile), body)
        response = HttpResponse(buffer.getvalue(), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="grid{grid.pk}_cgmes_{version}.zip"'
        return response
