"""Serializers of the operator API: declarations only, and the typed fields every request parameter and body is validated with."""

from datetime import UTC, datetime

from django.utils import timezone
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from twin import models


class GridSerializer(serializers.ModelSerializer):
    owner_iri = serializers.CharField(source="owner.iri", read_only=True)

    class Meta:
        model = models.Grid
        fields = ["id", "iri", "name", "owner", "owner_iri", "source", "version", "created_at", "updated_at"]


class ImportResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    iri = serializers.CharField()
    name = serializers.CharField()
    version = serializers.IntegerField()
    created = serializers.BooleanField()
    changed = serializers.BooleanField()
    counts = serializers.DictField(child=serializers.DictField(child=serializers.IntegerField()))


def asset_serializer(model) -> type[serializers.ModelSerializer]:
    """A read serializer exposing every field of a twin model (foreign keys as ids)."""
    meta = type("Meta", (), {"model": model, "fields": "__all__"})
    return type(f"{model.__name__}Serializer", (serializers.ModelSerializer,), {"Meta": meta})


# --- typed request validation: the fields every parameter and body is declared with ----------------------------------------------

MAX_IRI_CHARS = 500
MAX_NAME_CHARS = 200
# Times the load flow and its results can take: year 1 overflows the moment a zone offset or a step is applied.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class IriField(serializers.CharField):
    """An IRI: 1 to 500 characters, no NUL, no lone surrogates (DRF's CharField refuses both)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", MAX_IRI_CHARS)
        super().__init__(**kwargs)


class ZonedDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time with its zone (naive times are refused, not made aware) between 1900 and 2200."""

    default_error_messages = {"naive": "a time needs its zone (Z or an offset such as +01:00)",
                              "out_of_range": "the time must lie between 1900 and 2200"}

    def enforce_timezone(self, value):
        if timezone.is_naive(value):
            self.fail("naive")
        value = super().enforce_timezone(value)
        if not EARLIEST <= value < LATEST:
            self.fail("out_of_range")
        return value


class NumberField(serializers.FloatField):
    """A finite JSON number: strings and true/false are refused (a body is typed; `"1"` is not a number)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class QuerySerializer(serializers.Serializer):
    """Base of the serializers that declare a view's query parameters (and document them: `extend_schema(parameters=[...])`).

    Every declared parameter present is validated: an empty or invalid value is refused with 400 `invalid_filter`,
    never silently ignored. Undeclared parameters (pagination, purpose, filters of the filter backend) are left alone.
    """

    @classmethod
    def of(cls, request) -> dict:
        """The validated values of the declared parameters in the request's query string (the last value of a repeated one)."""
        params = request.query_params
        query = cls(data={name: params.get(name) for name in cls().fields if name in params})
        if not query.is_valid():
            raise ValidationError({"reason": "invalid_filter", "message": "a query parameter has a value it does not take",
                                   **query.errors})
        return query.validated_data
