"""Routes of the telemetry API (v1), mounted at /api/v1/telemetry/."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from ingest.api import views

router = DefaultRouter()
router.include_root_view = False
router.include_format_suffixes = False
router.trailing_slash = "/?"  # both /telemetry/batches and /telemetry/batches/ answer
router.register("batches", views.TelemetryBatchViewSet, basename="telemetry-batch")

urlpatterns = [
    path("", include(router.urls)),
    path("readings", views.ReadingsViewSet.as_view({"get": "list"}), name="telemetry-readings"),
    path("latest", views.LatestReadingsViewSet.as_view({"get": "list"}), name="telemetry-latest"),
    path("quantities", views.QuantitiesViewSet.as_view({"get": "list"}), name="telemetry-quantities"),
]
