"""Routes of the hub (v1): /api/v1/sharing/… (agreements, decisions, audit, consents) and /api/v1/shared/… (third-party views)."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from sharing.api import access, catalog, shared, sparql, views
from sharing.scope import MODEL_OF_TYPE

SHARED_ASSET_ROUTES = {"buses": "bus", "external-grids": "external_grid", "lines": "line", "transformers": "transformer",
                       "switches": "switch", "loads": "load", "static-generators": "static_generator", "storages": "storage",
                       "ev-chargers": "ev_charger", "meters": "meter"}
assert set(SHARED_ASSET_ROUTES.values()) == set(MODEL_OF_TYPE)


def _router() -> DefaultRouter:
    router = DefaultRouter()
    router.include_root_view = False
    router.include_format_suffixes = False
    router.trailing_slash = "/?"
    return router


sharing_router = _router()
sharing_router.register("agreements", views.AgreementViewSet, basename="agreement")
sharing_router.register("audit", views.AuditViewSet, basename="audit")
sharing_router.register("owner-consents", views.OwnerConsentViewSet, basename="owner-consent")
sharing_router.register("offers", access.OfferViewSet, basename="offer")
sharing_router.register("requests", access.AccessRequestViewSet, basename="access-request")

shared_router = _router()
shared_router.register("loadflow/runs", shared.SharedRunViewSet, basename="shared-run")
shared_router.register("catalog", catalog.CatalogViewSet, basename="shared-catalog")
for prefix, type_name in SHARED_ASSET_ROUTES.items():
    shared_router.register(prefix, shared.shared_asset_viewset(type_name), basename=f"shared-{type_name}")

urlpatterns = [
    path("sharing/", include(sharing_router.urls)),
    path("sharing/decisions", views.DecisionViewSet.as_view({"post": "create"}), name="sharing-decisions"),
    path("shared/", include(shared_router.urls)),
    path("shared/topology", shared.SharedTopologyViewSet.as_view({"get": "list"}), name="shared-topology"),
    path("shared/telemetry", shared.SharedTelemetryViewSet.as_view({"get": "list"}), name="shared-telemetry"),
    path("shared/violations", shared.SharedViolationViewSet.as_view({"get": "list"}), name="shared-violations"),
    path("shared/sparql", sparql.SparqlViewSet.as_view({"get": "query", "post": "query"}), name="shared-sparql"),
    path("shared/hosting-capacity", shared.SharedHostingViewSet.as_view({"get": "list"}), name="shared-hosting-capacity"),
]
