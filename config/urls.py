"""Top-level routes: the admin, the v1 API (operator, telemetry, hub), OAuth2 tokens, the vocabulary and the OpenAPI schema."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from oauth2_provider import views as oauth2_views

urlpatterns = [
    path("admin/", admin.site.urls),
    # The browsable API's log-in and log-out pages (session users: members of participants).
    path("api-auth/", include("rest_framework.urls")),
    path("api/v1/", include("twin.api.urls")),
    path("api/v1/telemetry/", include("ingest.api.urls")),
    path("api/v1/", include("sharing.api.urls")),
    # OAuth2 client credentials for API clients: POST grant_type=client_credentials with the client's id and secret.
    path("o/token/", oauth2_views.TokenView.as_view(), name="oauth2-token"),
    path("o/revoke_token/", oauth2_views.RevokeTokenView.as_view(), name="oauth2-revoke-token"),
    path("", include("ontology.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/schema/swagger-ui/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/schema/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]

# Under /api/ every error is the API's error shape (twin.api.errors), also those Django answers without a view.
handler400 = "twin.api.errors.handler400"
handler403 = "twin.api.errors.handler403"
handler404 = "twin.api.errors.handler404"
handler500 = "twin.api.errors.handler500"
