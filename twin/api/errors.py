"""One error shape for the whole API: `{"reason": <code>, "message": ..., ...}` with a 4xx status, and its place in the schema.

The handlers make every error that shape (DRF's, the domain's, Django's own 404/400/500); `ApiSchema` documents it on
every operation with the statuses the operation really gives, so a client (and schemathesis) can rely on both.
"""

from django.core.exceptions import TooManyFieldsSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.views import defaults
from drf_spectacular.openapi import AutoSchema
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework import serializers, status
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
# The database or the Redis of the broker and throttles gone (a restart, a failover): the client did nothing wrong and
# may retry, so 503 with Retry-After, not 500.
OUTAGES = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError)
OUTAGE_RETRY_AFTER_S = 5
DEFAULT_MESSAGES = {400: "the request does not pass validation: see the fields named", 404: "no such resource"}


def exception_handler(exc, context):
    """Turn client errors of the domain (OntologyError and its kin: RDF, ODRL, agreement lifecycle), Django's model
    validation errors and DRF errors into the project's error body."""
    if isinstance(exc, OntologyError):
        return Response(exc.as_dict(), status=exc.status)
    if isinstance(exc, OUTAGES):
        return Response(error_body("unavailable", "a service the hub depends on is unreachable: retry later", {}),
                        status=503, headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)})
    if isinstance(exc, DjangoValidationError):
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        return Response(error_body("invalid", "the request does not pass the model's rules", dict(errors)), status=400)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    body = dict(response.data) if isinstance(response.data, dict) else {"errors": response.data}
    if isinstance(body.get("reason"), str):
        reason = body.pop("reason")
        message = body.pop("message") if isinstance(body.get("message"), str) else None
    else:
        reason, detail = DRF_REASONS.get(response.status_code, "invalid"), body.pop("detail", None)
        message = str(detail) if detail else None
    response.data = error_body(reason, message or DEFAULT_MESSAGES.get(response.status_code, "the request was refused"), body)
    if response.status_code == status.HTTP_401_UNAUTHORIZED and "WWW-Authenticate" not in response:
        response["WWW-Authenticate"] = "Token"
    return response


SHAPE_KEYS = ("reason", "message")


def error_body(reason: str, message: str, errors: dict) -> dict:
    """The error shape, with the messages of each refused field under the field's name; a field named like a key of the shape
    (a body's `reason` or `message`) goes under `fields` instead, so `reason` and `message` are always the shape's strings."""
    clashing = {key: errors.pop(key) for key in SHAPE_KEYS if key in errors}
    return {"reason": reason, "message": message, **errors, **({"fields": clashing} if clashing else {})}


# --- errors Django answers before (or instead of) a view: no route, too many fields, an unexpected exception -----------------

API_PREFIXES = ("/api/", "/o/")


def _json_or_default(request, status: int, reason: str, message: str, default):
    if request.path.startswith(API_PREFIXES):
        return JsonResponse({"reason": reason, "message": message}, status=status)
    return default()


MAX_URI_BYTES = 8_000  # path + query: under gunicorn's largest request line (8,190, config/gunicorn_conf.py) and runserver's 65,536


class UriBoundMiddleware:
    """414 `uri_too_long` in the error shape for a path and query over MAX_URI_BYTES, before any view.

    Without it the limit was the web server's, answered as its own HTML page (gunicorn: a 400 at 4,094 bytes; the
    development server: a 414 at 65,536), while fifty 500-character IRIs are a valid results query: the fuzz found one.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        size = len(request.path_info.encode()) + len(request.META.get("QUERY_STRING", ""))
        if size > MAX_URI_BYTES:
            return JsonResponse({"reason": "uri_too_long", "message": f"the path and query take {size} bytes, more than the "
                                                                      f"{MAX_URI_BYTES} the API reads: send fewer or shorter values"},
                                status=414)
        return self.get_response(request)


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


# --- the error shape in the OpenAPI schema ---------------------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    """The body of every error: a machine-readable reason and a message; a refused field adds its messages under its name."""

    reason = serializers.CharField(help_text="Machine-readable cause, e.g. invalid_filter, not_found, shacl_violation.")
    message = serializers.CharField(help_text="What went wrong, for a person.")


# Statuses any operation can answer (who asks, with which credential, how often), each with what it means.
ERROR_STATUSES = {
    400: "a parameter or the body is invalid, or the credential acts for several participants (reason and fields say which)",
    401: "no credential, or an invalid or expired one",
    403: "the credential's role does not allow this",
    404: "absent, or outside what you may see (the two are indistinguishable)",
    414: f"the path and query are longer than {MAX_URI_BYTES} bytes (uri_too_long)",
    429: "too many requests from this credential: retry after Retry-After seconds",
}
BODY_ERROR_STATUSES = {413: "the body is larger than this operation takes", 415: "a content type this operation does not read"}
PUBLIC_RESOURCES = ("vocabulary",)  # decided before any role: no 403


class ApiSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the error responses of every operation with the error shape (one rule for all)."""

    def error_statuses(self) -> dict[int, str]:
        statuses = dict(ERROR_STATUSES)
        if getattr(self.view, "resource", None) in PUBLIC_RESOURCES:
            del statuses[403]
        if self.method in ("POST", "PUT", "PATCH") and self._get_request_body() is not None:
            statuses.update(BODY_ERROR_STATUSES)
        return statuses

    def _get_request_body(self, direction="request"):
        body = super()._get_request_body(direction)  # drf-spectacular calls a body given as raw schemas optional
        if body is not None and any(getattr(parser, "body_required", False) for parser in self.view.get_parsers()):
            body["required"] = True
        return body

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        error = self._get_response_for_code(ErrorSerializer, "400", direction=direction)
        for code, description in self.error_statuses().items():
            responses.setdefault(str(code), {"description": description})
        for code, response in responses.items():
            if code >= "400":  # an error listed by hand (a description only) has the error shape too
                response.setdefault("content", {}).update({media: dict(body) for media, body in error["content"].items()
                                                           if media not in response["content"]})
                response["description"] = response.get("description") or ERROR_STATUSES.get(int(code), "")
        return dict(sorted(responses.items()))
