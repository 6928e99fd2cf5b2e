"""One error shape for the whole API: `{"reason": <code>, "message": ..., ...}` with a 4xx status."""

from django.core.exceptions import ValidationError as DjangoValidationError
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
