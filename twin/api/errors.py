"""One error shape for the whole API: `{"reason": <code>, "message": ..., ...}` with a 4xx status."""

from django.core.exceptions import TooManyFieldsSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ontology.errors import OntologyError

DRF_REASONS = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    429: "throttled",
}


def exception_handler(exc, context):
    """Turn client errors of the domain (OntologyError and its kin: RDF, ODRL, agreement lifecycle), Django's model
    validation errors and DRF errors into the project's error body."""
    if isinstance(exc, OntologyError):
        return Response(exc.as_dict(), status=exc.status)
    if isinstance(exc, DjangoValidationError):
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        return Response({"reason": "invalid", "message": "the request does not pass the model's rules", **errors}, status=400)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    body = response.data if isinstance(response.data, dict) else {"errors": response.data}
    if "reason" not in body:
        message = body.pop("detail", None)
        body = {"reason": DRF_REASONS.get(response.status_code, "invalid"), **({"message": str(message)} if message else {}), **body}
    response.data = body
    if response.status_code == status.HTTP_401_UNAUTHORIZED and "WWW-Authenticate" not in response:
        response["WWW-Authenticate"] = "Token"
    return response


# --- errors Django answers before (or instead of) a view: no route, too many fields, an unexpected exception -----------------

API_PREFIXES = ("/api/", "/o/")


def _json_or_default(request, status: int, reason: str, message: str, default):
    if request.path.startswith(API_PREFIXES):
        return JsonResponse({"reason": reason, "message": message}, status=status)
    return default()


def handler400(request, exception=None):
    """400 outside a view (e.g. more than DATA_UPLOAD_MAX_NUMBER_FIELDS query parameters: TooManyFieldsSent)."""
    message = "too many query or form fields" if isinstance(exception, TooManyFieldsSent) else "the request is malformed"
    return _json_or_default(request, 400, "too_many_fields" if isinstance(exception, TooManyFieldsSent) else "bad_request", message,
                            lambda: defaults.bad_request(request, exception))


def handler403(request, exception=None):
    return _json_or_default(request, 403, "permission_denied", "forbidden", lambda: defaults.permission_denied(request, exception))


def handler404(request, exception=None):
    """404 for a URL no route matches (e.g. /api/v1/grids/1.5/)."""
    return _json_or_default(request, 404, "not_found", "no such resource", lambda: defaults.page_not_found(request, exception))


def handler500(request):
    """An unexpected error: logged with its traceback by Django; the client gets the error shape, nothing of the internals."""
    return _json_or_default(request, 500, "server_error", "an unexpected error; it has been logged", lambda: defaults.server_error(request))
