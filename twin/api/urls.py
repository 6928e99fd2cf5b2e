"""Routes of the operator API (v1)."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from twin import models
from twin.api import cgmes, history, loadflow, views

ASSET_ROUTES = {
    "feeders": models.Feeder,
    "base-voltages": models.BaseVoltage,
    "buses": models.Bus,
    "external-grids": models.ExternalGrid,
    "lines": models.Line,
    "transformers": models.Transformer,
    "switches": models.Switch,
    "loads": models.Load,
    "static-generators": models.StaticGenerator,
    "storages": models.Storage,
    "ev-chargers": models.EVCharger,
    "meters": models.Meter,
}

router = DefaultRouter()
router.include_root_view = False  # every endpoint is a PolicyViewSet; the schema (/api/schema/) lists them
router.include_format_suffixes = False
router.trailing_slash = "/?"  # both /grids/1/rdf and /grids/1/rdf/ answer
router.register("models", views.ModelUploadViewSet, basename="model")
router.register("grids", views.GridViewSet, basename="grid")
router.register(r"grids/(?P<grid_pk>[^/.]+)/versions", history.GridVersionViewSet, basename="grid-version")
router.register(r"grids/(?P<grid_pk>[^/.]+)/cgmes", cgmes.GridCgmesViewSet, basename="grid-cgmes")
router.register("loadflow/runs", loadflow.LoadFlowRunViewSet, basename="loadflow-run")
router.register("loadflow/violations", loadflow.ViolationViewSet, basename="loadflow-violation")
for prefix, model in ASSET_ROUTES.items():
    router.register(prefix, views.asset_viewset(model), basename=model._meta.model_name)

urlpatterns = [path("", include(router.urls))]
