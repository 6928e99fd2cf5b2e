"""The one base viewset of every API endpoint: authenticate → decide (sharing.decisions) → restrict → respond → audit.

A viewset declares its `resource` (and for assets its `asset_model`); `initial()` asks the decision point
once per request and refuses what it denies (404 when out of scope); `get_queryset()` is the decision's
restricted queryset and nothing else, so no view scopes rows by hand; `finalize_response()` writes the
audit entry with what went out. Filters on foreign keys take ids as numbers, never listing the target table,
so filter forms show nobody's names and `?grid=<someone else's id>` is an empty page, like a missing id.
"""

from __future__ import annotations

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.dateparse import parse_datetime
from django_filters.rest_framework import DjangoFilterBackend, FilterSet
from drf_spectacular.utils import OpenApiParameter, extend_schema_field
from rest_framework import exceptions, pagination, viewsets

from sharing import decisions
from sharing.audit import audit_record
from sharing.principals import principal_of
from twin.api.errors import ApiSchema
from twin.api.serializers import DATE_TIME_SCHEMA, MAX_ID, IriField, QuerySerializer, TimeRefused, invalid_filter, zoned_time
from twin.ids import parse_id

METHOD_ACTIONS = {"GET": decisions.VIEW, "HEAD": decisions.VIEW, "OPTIONS": decisions.VIEW, "POST": decisions.ADD,
                  "PUT": decisions.CHANGE, "PATCH": decisions.CHANGE, "DELETE": decisions.CHANGE}


class DecisionDenied(exceptions.APIException):
    """A denied decision, answered with its status and machine-readable reason."""

    def __init__(self, decision: decisions.Decision):
        self.status_code = decision.status
        detail = {"reason": decision.reason, "message": decision.message, **decision.details}
        super().__init__(detail=detail)


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_ID})
class IdFilter(django_filters.NumberFilter):
    """A foreign key filtered by id: a number within bigint, no choices rendered, no existence check."""

    field_class = django_filters.fields.forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class RawNullBooleanSelect(forms.NullBooleanSelect):
    """The yes/no/unknown select of the browsable API's filter form, handing the raw value on (Django's maps junk to "unknown")."""

    def value_from_datadict(self, data, files, name):
        return data.get(name)


class StrictBooleanField(forms.NullBooleanField):
    """true/false (or 1/0, True/False); anything else is an invalid value, not "no filter" as Django's NullBooleanField has it."""

    widget = RawNullBooleanSelect
    VALUES = {"true": True, "1": True, "false": False, "0": False}

    def to_python(self, value):
        if value in (None, "", "unknown"):
            return None
        if isinstance(value, bool):
            return value
        found = self.VALUES.get(str(value).lower())
        if found is None:
            raise ValidationError("a true/false filter takes true or false", code="invalid")
        return found

    def validate(self, value):
        pass


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class ZonedDateTimeFormField(forms.DateTimeField):
    """An ISO 8601 time by the API's one rule for times (zoned_time); Django's own field would make a naive time aware."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            parsed = parse_datetime(str(value))
        except ValueError:  # well-formed, but no such day or hour (2024-02-30)
            parsed = None
        if parsed is None:
            raise ValidationError("an ISO 8601 time with its zone, e.g. 2024-05-01T00:00:00Z", code="invalid")
        try:
            return zoned_time(parsed)
        except TimeRefused as exc:
            raise ValidationError(str(exc), code=exc.code) from exc


@extend_schema_field(DATE_TIME_SCHEMA)
class ZonedDateTimeFilter(django_filters.DateTimeFilter):
    field_class = ZonedDateTimeFormField


@extend_schema_field({"type": "string", "minLength": 1})
class TextFilter(django_filters.CharFilter):
    """A text filter; empty is refused like every empty filter value (ScopedFilterBackend), so the schema says minLength 1."""


class ScopedFilterSet(FilterSet):
    """django-filter's defaults, but foreign keys are ids (IdFilter) instead of choices from the whole table, booleans strict,
    and times and texts by the API's rules (ZonedDateTimeFilter, TextFilter)."""

    FILTER_DEFAULTS = {**FilterSet.FILTER_DEFAULTS, models.ForeignKey: {"filter_class": IdFilter},
                       models.OneToOneField: {"filter_class": IdFilter},
                       models.BooleanField: {"filter_class": StrictBooleanFilter},
                       models.DateTimeField: {"filter_class": ZonedDateTimeFilter},
                       models.CharField: {"filter_class": TextFilter}, models.TextField: {"filter_class": TextFilter}}


class ScopedFilterBackend(DjangoFilterBackend):
    """The filter backend of every list: ScopedFilterSet as the base of the generated filter sets; an invalid value is a 400."""

    filterset_base = ScopedFilterSet
    raise_exception = True

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        # django-filter skips an empty value as if it were absent: `?end=` would silently filter nothing
        errors = {name: ["an empty value filters nothing: give a value or leave the parameter out"]
                  for name in filterset.filters if request.query_params.get(name) == ""}
        if errors or not filterset.is_valid():
            raise invalid_filter(errors | {name: list(messages) for name, messages in filterset.errors.items()})
        return filterset.qs


# The pagination parameters, for views whose response the schema cannot see is a page (lists of plain dicts).
PAGE_PARAMETERS = [OpenApiParameter("limit", {"type": "integer", "minimum": 1}, description="Rows per page (default 100, at most 1,000)."),
                   OpenApiParameter("offset", {"type": "integer", "minimum": 0}, description="Rows to skip.")]


class BoundedLimitOffsetPagination(pagination.LimitOffsetPagination):
    """Pages of at most 1,000 rows (an oversized `limit` is cut to it), offsets cut to bigint; a value that is no count is a 400."""

    max_limit = 1000

    def _parameter(self, request, name: str, *, minimum: int, default: int | None) -> int | None:
        text = request.query_params.get(name)
        if text is None:
            return default
        try:
            value = int(text) if text.isascii() and text.isdigit() else None
        except ValueError:  # more digits than Python converts
            value = None
        if value is None or value < minimum:
            raise invalid_filter({name: [f"{name} takes a whole number from {minimum}"]})
        return value

    def get_limit(self, request):
        limit = self._parameter(request, self.limit_query_param, minimum=1, default=self.default_limit)
        return min(limit, self.max_limit) if limit is not None else None

    def get_offset(self, request):
        return min(self._parameter(request, self.offset_query_param, minimum=0, default=0), MAX_ID)

    def get_schema_operation_parameters(self, view):
        """`limit` and `offset` with the smallest values they take (a larger value than a page holds is cut, not refused)."""
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1 if parameter["name"] == self.limit_query_param else 0
        return parameters


class DecisionQuery(QuerySerializer):
    """The parameters any request may carry for its decision, typed like every other: the participant a user acts for and the
    agreement to read under (`purpose` is the decision's own to judge: purpose_required, unknown_purpose)."""

    participant = IriField(required=False)
    agreement = IriField(required=False)


class PolicyViewSet(viewsets.GenericViewSet):
    """Base of every endpoint: the request is decided once in `initial()`; rows come only from the decision.

    `resource` names what the endpoint serves (see `sharing.decisions.RESOURCES`); `policy_actions` maps a
    viewset action to the policy action when the HTTP method does not say it (e.g. `changes` is a change).
    Views set `self.records_out` when the number of records sent is not the length of the page.
    """

    resource: str = ""
    asset_model = None
    policy_actions: dict[str, str] = {}
    filter_backends = [ScopedFilterBackend]
    pagination_class = BoundedLimitOffsetPagination
    schema = ApiSchema()  # the error responses of every operation, in the error shape
    decision: decisions.Decision | None = None

    def policy_action(self) -> str:
        return self.policy_actions.get(getattr(self, "action", None) or "", METHOD_ACTIONS.get(self.request.method, decisions.VIEW))

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        method = request.method.lower()  # a method the route does not take: 405 (with Allow) before any decision; a handler
        if method not in self.http_method_names or not hasattr(self, method):  # name (e.g. SPARQL's `query`) is not a method
            raise exceptions.MethodNotAllowed(request.method)
        DecisionQuery.of(request)
        self.principal = principal_of(request)
        self.decision = decisions.decide(self.principal, self.policy_action(), self.resource,
                                         purpose=request.query_params.get(decisions.PURPOSE_PARAMETER), model=self.asset_model,
                                         agreement=request.query_params.get(decisions.AGREEMENT_PARAMETER))
        if not self.decision.allowed:
            raise DecisionDenied(self.decision)

    def route_row(self, rows, kwarg: str):
        """The row a nested route names (`kwarg`, e.g. `grid_pk` of /grids/{id}/versions) among `rows`, the decision's rows:
        out of scope, absent or not an id is the same 404, so the answer says nothing of rows the caller may not see."""
        text = self.kwargs.get(kwarg, "")
        row = rows.filter(pk=number).first() if (number := parse_id(text)) is not None else None
        if row is None:
            raise exceptions.NotFound(f"no such {rows.model._meta.verbose_name}")
        return row

    def get_queryset(self):
        if self.decision is None:  # schema generation: no request was decided, so no rows
            model = self.asset_model or getattr(getattr(self.get_serializer_class(), "Meta", None), "model", None)
            return model.objects.none() if model is not None else None
        return self.decision.queryset

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        self.audit(request, response)
        return response

    def audit(self, request, response) -> None:
        """One append-only audit entry per request: who, which decision and rule, what was asked, how many records went out."""
        decision = self.decision
        principal = principal_of(request)
        provider = decision.provider if decision is not None else None
        audit_record(
            participant_iri=principal.participant.iri if principal.participant else "", credential=principal.credential_label,
            action=self.policy_action(), resource=self.resource, purpose=request.query_params.get(decisions.PURPOSE_PARAMETER, ""),
            allowed=bool(decision and decision.allowed and response.status_code < 400),
            rule=decision.rule if decision is not None else f"deny:{response.status_code}",
            agreement_uid=decision.agreement.uid if decision is not None and decision.agreement else "",
            provider_iri=provider.iri if provider is not None else "", method=request.method, path=request.path,
            query=self.audit_query(request), status_code=response.status_code, records=self.records(response),
        )

    def audit_query(self, request) -> dict:
        """What the audit keeps of the request's asks: its query parameters (views whose asks come in the body add them)."""
        return dict(request.query_params.lists())

    def records(self, response) -> int:
        counted = getattr(self, "records_out", None)
        if counted is not None:
            return counted
        if response.status_code >= 400:
            return 0
        data = getattr(response, "data", None)
        if isinstance(data, dict) and isinstance(data.get("results"), list):
            return len(data["results"])
        if isinstance(data, list):
            return len(data)
        return 1
