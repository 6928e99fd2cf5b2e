"""Serializers of the operator API: declarations only, and the typed fields every request parameter and body is validated with."""

from datetime import UTC, datetime

from django.db import models as django_models
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from twin import models
from twin.ids import MAX_ID


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
# Times the load flow and its results can take: year 1 overflows the moment a zone offset or a step is applied, and pandas
# stops at 2262. The years are those of the time as written, so the schema can say them (DATE_TIME_SCHEMA's pattern).
FIRST_YEAR, LAST_YEAR = 1900, 2199
DATE_TIME_SCHEMA = {"type": "string", "format": "date-time", "pattern": "^(19|20|21)[0-9]{2}-"}
TIME_MESSAGES = {"naive": "a time needs its zone (Z or an offset such as +01:00)",
                 "out_of_range": f"the time must lie in the years {FIRST_YEAR} to {LAST_YEAR}"}


class TimeRefused(ValueError):
    """A time a client sent that the API does not take; `code` is a key of TIME_MESSAGES."""

    def __init__(self, code: str):
        super().__init__(TIME_MESSAGES[code])
        self.code = code


def zoned_time(value: datetime) -> datetime:
    """The one rule for every time a client sends, in a body or a query: with its zone (a naive time is refused, not made
    aware) and in the years FIRST_YEAR to LAST_YEAR as written; answered in UTC (so PostgreSQL never sees an odd offset)."""
    if timezone.is_naive(value):
        raise TimeRefused("naive")
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise TimeRefused("out_of_range")
    return value.astimezone(UTC)


class IriField(serializers.CharField):
    """An IRI: 1 to 500 characters, no NUL, no lone surrogates (DRF's CharField refuses both)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", MAX_IRI_CHARS)
        super().__init__(**kwargs)


class IdField(serializers.IntegerField):
    """A row's id: a whole number from 1 to the bigint range (larger numbers are refused, never sent to the database)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


@extend_schema_field(DATE_TIME_SCHEMA)
class ZonedDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time with its zone between 1900 and 2199 (zoned_time)."""

    default_error_messages = TIME_MESSAGES

    def enforce_timezone(self, value):
        try:
            return zoned_time(value)
        except TimeRefused as exc:
            self.fail(exc.code)


class NumberField(serializers.FloatField):
    """A finite JSON number: strings and true/false are refused (a body is typed; `"1"` is not a number)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


def invalid_filter(errors: dict) -> ValidationError:
    """The one refusal of a query parameter's value: 400 `invalid_filter`, with the messages per parameter."""
    return ValidationError({"reason": "invalid_filter", "message": "a query parameter has a value it does not take", **errors})


def as_sent(fields: dict) -> dict:
    """Text fields that take their value as sent: DRF trims whitespace before it checks lengths, so a value longer than the
    schema allows would pass and a blank one of spaces would be refused though the schema takes it."""
    for field in fields.values():
        while field is not None:  # also the items of lists and dicts
            if isinstance(field, serializers.CharField):
                field.trim_whitespace = False
            field = getattr(field, "child", None)
    return fields


class QuerySerializer(serializers.Serializer):
    """Base of the serializers that declare a view's query parameters (and document them: `extend_schema(parameters=[...])`).

    Every declared parameter present is validated: an empty or invalid value is refused with 400 `invalid_filter`,
    never silently ignored. Undeclared parameters (pagination, purpose, filters of the filter backend) are left alone.
    """

    @classmethod
    def of(cls, request) -> dict:
        """The validated values of the declared parameters in the request's query string: every value of a list parameter
        (repeated, `?point=a&point=b`), the last value of any other."""
        params = request.query_params
        query = cls(data={name: params.getlist(name) if isinstance(field, serializers.ListField) else params.get(name)
                          for name, field in cls().fields.items() if name in params})
        if not query.is_valid():
            raise invalid_filter(query.errors)
        return query.validated_data

    def get_fields(self):
        return as_sent(super().get_fields())


# --- JSON bodies: typed, not coerced ----------------------------------------------------------------------------------------------

JSON_TYPES = [  # (fields, the JSON type their values must have, its name); the first match decides
    ((serializers.JSONField, serializers.HiddenField, serializers.SerializerMethodField), None, ""),
    ((serializers.BooleanField,), bool, "true or false"),
    ((serializers.IntegerField,), int, "a whole number"),
    ((serializers.FloatField, serializers.DecimalField), int | float, "a number"),
    ((serializers.ListField, serializers.ListSerializer, serializers.MultipleChoiceField), list, "a list"),
    ((serializers.DictField, serializers.Serializer), dict, "an object"),
    ((serializers.CharField, serializers.DateTimeField, serializers.DateField, serializers.SlugRelatedField), str, "a string"),
]


def json_type_error(field, value) -> str | None:
    """What is wrong with the JSON type of `value` for `field`, if anything (null is left to the field's allow_null)."""
    if value is None:
        return None
    if isinstance(field, serializers.ChoiceField) and not isinstance(field, serializers.MultipleChoiceField):
        wanted, name = (str, "a string") if all(isinstance(key, str) for key in field.choices) else (None, "")
    else:
        wanted, name = next(((t, n) for kinds, t, n in JSON_TYPES if isinstance(field, kinds)), (None, ""))
    if wanted is None:
        return None
    if (isinstance(value, bool) and wanted is not bool) or not isinstance(value, wanted):
        return f"must be {name}"
    child = getattr(field, "child", None)
    if isinstance(field, serializers.ListField | serializers.DictField) and child is not None:
        items = value if isinstance(value, list) else value.values()
        return next((f"each item {error}" for item in items if (error := json_type_error(child, item))), None)
    return None


# Every serializer of a JSON body derives from BodySerializer or BodyModelSerializer: each value must have its field's JSON type
# before the field's own rules run (DRF alone takes 0 for "0", "1" for 1 and "yes" for true), and each time of a model field
# needs its zone (ZonedDateTimeField). They carry no docstring: the schema would show it for every body that has none.
class JsonBody:
    def get_fields(self):
        return as_sent(super().get_fields())

    def to_internal_value(self, data):
        if isinstance(data, dict):
            errors = {name: [error] for name, field in self.fields.items()
                      if name in data and not field.read_only and (error := json_type_error(field, data[name]))}
            if errors:
                raise ValidationError(errors)
        return super().to_internal_value(data)


class BodySerializer(JsonBody, serializers.Serializer):
    pass


class BodyModelSerializer(JsonBody, serializers.ModelSerializer):
    serializer_field_mapping = {**serializers.ModelSerializer.serializer_field_mapping, django_models.DateTimeField: ZonedDateTimeField}
