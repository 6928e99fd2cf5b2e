"""Admin for data stewards: the inbox of access requests, offers, agreements with their lifecycle, API clients, the audit.

Who sees what. A superuser sees every row. Any other staff user sees only the rows of the participants they
are a data steward of (`Participant.stewards`): requests made to them (reviewed) or by them (read-only), their
offers, agreements they provide (editable) or consume (read-only), their participants' API clients, and audit
entries asked by or about their participants. Out-of-scope rows are absent (the admin answers as for a row that
does not exist), on the workbench's own pages too (preview, changes, export); the scope picture answers 404.

Permissions. Stewardship *is* the permission: `has_module/view/add/change_permission` check the steward
relation, so nobody assigns Django model permissions by hand, and for non-superusers those permissions are not
consulted at all (a staff user who stewards nothing sees nothing here, whatever Django permissions they hold).
A steward still needs `is_staff` to log in to the admin. Nobody deletes agreements, requests, API clients or audit
entries, nor offers that were requested: agreements are revoked, clients revoked, offers unpublished, and the
audit is append-only.

Acting for a provider. Lifecycle steps (offer, activate, suspend, revoke, amend), request decisions (approve,
approve as an offer, reject, counter-offer), publishing offers, the access preview and the scope picture go
through `sharing.services`, `sharing.access_requests` and `sharing.preview` with the provider as the actor, and
only for a steward of that provider, superuser or not: a superuser who is not the provider's steward may draft,
but not commit the provider to anything nor look at its data through a consumer's eyes.

The workbench's pages (templates under sharing/templates/admin/sharing/): a request's page with its decisions as
buttons, the reject and counter-offer forms, the access preview (`sharing.preview.access_preview`: what the consumer
would get now, decided by the real decision point and audited as a preview), the changes of an amendment from
the version it replaces, the scope picture (`sharing.pictures.scope_picture`), and the audit export.
"""

from __future__ import annotations

import csv
import uuid
from datetime import datetime, time, timedelta
from urllib.parse import urlsplit

import orjson
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Case, Count, IntegerField, Q, Value, When
from django.http import Http404, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.html import format_html, format_html_join
from oauth2_provider.settings import oauth2_settings

from ontology.errors import OntologyError
from sharing import access_requests, services
from sharing.audit import audit_record
from sharing.datasets import offer_datasets, parse_dataset_id
from sharing.models import (
    ASSET_TYPES,
    DROPPABLE_FIELDS,
    PROHIBITIONS,
    AccessRequest,
    Agreement,
    ApiClient,
    AuditEntry,
    DataCategory,
    DatasetOffer,
    GroupBy,
    Purpose,
    Resolution,
)
from sharing.oauth import api_client_issue, api_client_revoke, api_client_rotate
from sharing.odrl import agreement_check
from sharing.pictures import scope_picture
from sharing.preview import access_preview
from twin.admin import ParticipantAdmin
from twin.ids import parse_id
from twin.models import Feeder, Grid, Participant

Status = Agreement.Status


def stewarded(request) -> dict[int, str]:
    """The participants (pk → IRI) the request's user is a data steward of; the rule lives on `ParticipantAdmin`."""
    return ParticipantAdmin.stewarded(request)


def is_superuser(request) -> bool:
    return request.user.is_active and request.user.is_superuser


def admin_credential(request) -> str:
    """How the audit names a change made in the admin: kind and id, as `Principal.credential_label` does."""
    return f"admin:{request.user.pk}"


class StewardedAdmin(admin.ModelAdmin):
    """The stewards' row rule, once: a superuser sees every row; any other user the rows whose `party_fields` (foreign
    keys to participants) name a participant it stewards. Module access and adding need stewarding someone."""

    party_fields: tuple[str, ...] = ()

    def get_queryset(self, request):
        rows = super().get_queryset(request)
        if is_superuser(request):
            return rows
        mine = list(stewarded(request))
        parties = Q(pk__in=[])
        for name in self.party_fields:
            parties |= Q(**{f"{name}_id__in": mine})
        return rows.filter(parties)

    def has_module_permission(self, request):
        return is_superuser(request) or bool(stewarded(request))

    def has_view_permission(self, request, obj=None):
        mine = stewarded(request)
        return is_superuser(request) or (bool(mine) and (obj is None or any(getattr(obj, f"{n}_id") in mine for n in self.party_fields)))

    def has_add_permission(self, request):
        return is_superuser(request) or bool(stewarded(request))


# --- what an agreement grants, in one line ----------------------------------------------------------

RESOLUTION_WORDS = {"raw": "at raw resolution", "15min": "at 15-minute resolution", "hour": "hourly", "day": "daily"}
PROHIBITION_WORDS = {"distribute": "distribute", "sell": "sell", "reidentify": "re-identify"}
IRIS_LISTED = 3


def _words(items: list[str], conjunction: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = [str(item) for item in items]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conjunction} {items[-1]}" if items else ""


def _short_iri(iri: str) -> str:
    """The last two path segments of an IRI (…/feeder/0), or the whole IRI when it has no such path."""
    parts = urlsplit(iri)
    segments = [s for s in parts.path.split("/") if s]
    if not parts.netloc or len(segments) < 2:
        return iri
    return "…/" + "/".join(segments[-2:]) + (f"#{parts.fragment}" if parts.fragment else "")


def _iris(kind: str, iris: list[str]) -> str:
    if not iris:
        return ""
    shown = [_short_iri(iri) for iri in iris[:IRIS_LISTED]]
    if len(iris) > IRIS_LISTED:
        shown.append(f"{len(iris) - IRIS_LISTED} more")
    return f"{kind}{'s' if len(iris) > 1 else ''} {_words(shown)}"


def _when(at: datetime) -> str:
    local = timezone.localtime(at)
    return f"{local:%Y-%m-%d}" if (local.hour, local.minute, local.second) == (0, 0, 0) else f"{local:%Y-%m-%d %H:%M}"


def agreement_summary(agreement: Agreement) -> str:
    """One readable line of what an agreement grants: who may read what of which part of the grid, how, why, until when.

    For example "Flex Aggregator may read telemetry and topology of feeder …/feeder/0 hourly for flexibility procurement,
    aggregated per feeder over groups of at least 5 meters, until 2027-03-31; owner and coordinates removed".
    """
    categories = dict(DataCategory.choices)
    granted = _words([categories.get(c, c) for c in agreement.categories]) or "nothing"
    where = " in ".join(part for part in (_iris("asset", agreement.asset_iris), _iris("feeder", agreement.feeder_iris),
                                          _iris("grid", agreement.grid_iris)) if part)
    where = where or f"every grid of {agreement.provider}"
    if agreement.asset_types:
        where = f"the {_words([t.replace('_', ' ') for t in agreement.asset_types])} assets of {where}"
    text = f"{agreement.consumer} may read {granted} of {where}"
    telemetry = DataCategory.TELEMETRY in agreement.categories
    if telemetry:
        text += f" {RESOLUTION_WORDS.get(agreement.resolution, agreement.resolution)}"
    text += f" for {dict(Purpose.choices).get(agreement.purpose, agreement.purpose)}"
    if telemetry:
        text += f", aggregated per {agreement.group_by} over groups of at least {agreement.min_group_size} meters"
    if agreement.data_start or agreement.data_end:
        window = [f"from {_when(agreement.data_start)}" if agreement.data_start else "", f"before {_when(agreement.data_end)}"
                  if agreement.data_end else ""]
        text += ", data time-stamped " + " ".join(w for w in window if w)
    if agreement.valid_from and agreement.valid_from > timezone.now():
        text += f", from {_when(agreement.valid_from)}"
    if agreement.valid_until:
        text += f", until {_when(agreement.valid_until)}"
    duties = []
    if agreement.dropped_fields:
        duties.append(f"{_words(agreement.dropped_fields)} removed")
    if agreement.prohibitions:
        duties.append(f"may not {_words([PROHIBITION_WORDS.get(p, p) for p in agreement.prohibitions], 'or')} the data")
    if agreement.attribution:
        duties.append(f"attributed as “{agreement.attribution}”")
    if agreement.delete_after_days is not None:
        duties.append(f"deleted {agreement.delete_after_days} days after reading")
    return "; ".join([text, *duties])


# --- agreements ---------------------------------------------------------------------------------------


class IriListField(forms.CharField):
    """A list of IRIs, one a line (a JSON list in the model)."""

    widget = forms.Textarea(attrs={"rows": 2, "cols": 90})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        text = super().to_python(value)
        return [line.strip() for line in text.splitlines() if line.strip()]


CHOICE_LISTS = {
    "categories": DataCategory.choices,
    "asset_types": [(t, t.replace("_", " ")) for t in ASSET_TYPES],
    "dropped_fields": [(f, f) for f in DROPPABLE_FIELDS],
    "prohibitions": [(p, PROHIBITION_WORDS[p]) for p in PROHIBITIONS],
}
CHOICE_HELP = {"categories": "Data categories permitted (at least one).", "asset_types": "Asset types in scope; none ticked: all.",
               "dropped_fields": "Fields removed from every response.", "prohibitions": "What the consumer may not do with the data."}
IRI_LISTS = {"grid_iris": "Grids", "feeder_iris": "Feeders", "asset_iris": "Assets"}
LIFECYCLE_FIELDS = ["uid", "version", "previous", "status", "created_at", "created_by", "offered_at", "activated_at", "activated_by",
                    "ended_at", "end_reason"]
TERM_FIELDSETS = [
    (None, {"fields": ["provider", "consumer", "purpose", ("valid_from", "valid_until")]}),
    ("Scope: what may be read, of which part of the provider's grids", {"fields": ["categories", "grid_iris", "feeder_iris",
                                                                                   "asset_types", "asset_iris"]}),
    ("Obligations", {"fields": ["resolution", "group_by", "min_group_size", "dropped_fields", ("data_start", "data_end"),
                                "prohibitions", "attribution", "delete_after_days"]}),
]


def _odrl_messages(exc: OntologyError) -> list[str]:
    violations = getattr(exc, "violations", [])
    return [exc.message, *[f"{v.message} ({v.path or v.focus_node})" for v in violations]]


def term_text(agreement: Agreement, name: str) -> str:
    """One term of an agreement in words: names for participants and choices, labels for lists, dates as the summary writes them."""
    value = getattr(agreement, name)
    if name in ("provider", "consumer"):
        return str(value)
    if name in ("purpose", "resolution", "group_by"):
        return getattr(agreement, f"get_{name}_display")()
    if name in CHOICE_LISTS:
        labels = dict(CHOICE_LISTS[name])
        return ", ".join(str(labels.get(v, v)) for v in value) or ("all" if name == "asset_types" else "none")
    if name in IRI_LISTS:
        return ", ".join(value) or "all"
    if isinstance(value, datetime):
        return f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S}"
    return "—" if value in (None, "") else str(value)


def _term_value(agreement: Agreement, name: str):
    if name in ("provider", "consumer"):
        return getattr(agreement, f"{name}_id")
    value = getattr(agreement, name)
    return sorted(value) if isinstance(value, list) else value


def agreement_changes(old: Agreement, new: Agreement) -> list[tuple[str, str, str]]:
    """(term, old value, new value) in words, for each term that differs between two versions (lists compared as sets)."""
    return [(str(Agreement._meta.get_field(name).verbose_name), term_text(old, name), term_text(new, name)) for name in Agreement.TERMS
            if _term_value(old, name) != _term_value(new, name)]


class AgreementForm(forms.ModelForm):
    """The terms of a draft; on top of the model's field rules, the ODRL profile's shapes judge the policy as a whole."""

    def _post_clean(self):
        super()._post_clean()
        if self.errors or not set(self.fields) & set(Agreement.TERMS):
            return
        if not self.instance.uid:  # minted here so the shapes judge the policy that will be stored
            self.instance.uid = f"urn:uuid:{uuid.uuid4()}"
        try:
            agreement_check(self.instance)
        except OntologyError as exc:
            self.add_error(None, _odrl_messages(exc))


def _lifecycle_action(step: str, description: str, done: str):
    def act(model_admin: AgreementAdmin, request, queryset):
        model_admin.transition(request, queryset, step, done)

    act.__name__ = step
    return admin.action(description=description, permissions=["change"])(act)


@admin.register(Agreement)
class AgreementAdmin(StewardedAdmin):
    """Agreements of the steward's participants: terms edited while a draft, lifecycle steps as actions."""

    party_fields = ("provider", "consumer")

    form = AgreementForm
    list_display = ["provider", "consumer", "purpose", "status", "version", "validity"]
    list_filter = ["status", "purpose"]
    list_select_related = ["provider", "consumer"]
    search_fields = ["uid", "provider__name", "consumer__name"]
    actions = [
        _lifecycle_action("offer", "Offer the selected drafts to their consumers (freezes the terms)", "offered"),
        _lifecycle_action("activate", "Activate the selected agreements", "activated"),
        _lifecycle_action("suspend", "Suspend the selected agreements", "suspended"),
        _lifecycle_action("revoke", "Revoke the selected agreements", "revoked"),
        "amend",
    ]

    change_form_template = "admin/sharing/agreement/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("provider", "consumer", "previous")

    # permissions: the steward relation (module docstring, StewardedAdmin)
    def has_change_permission(self, request, obj=None):
        mine = stewarded(request)
        return is_superuser(request) or (bool(mine) and (obj is None or obj.provider_id in mine))

    def has_delete_permission(self, request, obj=None):
        return False

    def stewards_provider(self, request, agreement: Agreement) -> bool:
        """Whether the user may act for the agreement's provider: its steward, whether superuser or not."""
        return agreement.provider_id in stewarded(request)

    # the form
    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "provider" and not is_superuser(request):
            kwargs["queryset"] = Participant.objects.filter(pk__in=list(stewarded(request)))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name in CHOICE_LISTS:
            return forms.MultipleChoiceField(choices=CHOICE_LISTS[db_field.name], widget=forms.CheckboxSelectMultiple,
                                             required=not db_field.blank, label=db_field.verbose_name.capitalize(),
                                             help_text=CHOICE_HELP[db_field.name])
        if db_field.name in IRI_LISTS:
            return IriListField(required=False, label=IRI_LISTS[db_field.name], help_text=f"{db_field.help_text} One IRI a line.")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        mine = stewarded(request)
        if len(mine) == 1 and "provider" not in initial:
            initial["provider"] = next(iter(mine))
        return initial

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return TERM_FIELDSETS
        return [("What it grants", {"fields": ["grants"]}), *TERM_FIELDSETS, ("Lifecycle", {"fields": LIFECYCLE_FIELDS})]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        frozen = list(Agreement.TERMS) if obj.status != Status.DRAFT else []
        return ["grants", *LIFECYCLE_FIELDS, *frozen]

    @admin.display(description="grants")
    def grants(self, obj: Agreement) -> str:
        return agreement_summary(obj)

    @admin.display(description="validity", ordering="valid_until")
    def validity(self, obj: Agreement) -> str:
        return f"{_when(obj.valid_from)} → {_when(obj.valid_until)}"

    # saving goes through the services
    def save_model(self, request, obj, form, change):
        if not change:
            created = services.agreement_create(provider=obj.provider, user=request.user, credential=admin_credential(request), uid=obj.uid,
                                                **{name: getattr(obj, name) for name in Agreement.TERMS if name != "provider"})
            obj.pk, obj._state.adding = created.pk, False
            obj.refresh_from_db()
            return
        if obj.status != Status.DRAFT or not form.has_changed():
            return  # the terms were read-only (or untouched): nothing to save
        if Agreement.objects.select_for_update().get(pk=obj.pk).status != Status.DRAFT:
            raise PermissionDenied("the agreement was offered meanwhile: its terms are frozen")
        obj.full_clean(exclude=["created_by", "activated_by", "previous"])
        agreement_check(obj)
        obj.save()
        audit_record(participant_iri=obj.provider.iri, credential=admin_credential(request), action="agreement.change",
                     resource="agreement", purpose="", allowed=True, rule="steward", agreement_uid=obj.uid, provider_iri=obj.provider.iri,
                     method="", path="", query={"changed": form.changed_data}, status_code=None, records=1)

    # the workbench pages: access preview, changes from the previous version, the scope on the grid map
    def change_view(self, request, object_id, form_url="", extra_context=None):
        agreement = _visible(self, request, object_id) if parse_id(object_id) is not None else None
        previous = None
        if agreement is not None and agreement.previous_id:
            previous = self.get_queryset(request).filter(pk=agreement.previous_id).first()
        extra = {"can_preview": agreement is not None and self.stewards_provider(request, agreement), "previous_version": previous,
                 "preview_label": PREVIEW}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def get_urls(self):
        view = self.admin_site.admin_view
        own = [path("<int:object_id>/preview/", view(self.preview_view), name="sharing_agreement_preview"),
               path("<int:object_id>/changes/", view(self.changes_view), name="sharing_agreement_changes"),
               path("<int:object_id>/scope.png", view(self.picture_view), name="sharing_agreement_scope_picture")]
        return own + super().get_urls()

    def preview_view(self, request, object_id):
        """What the consumer would see now under this agreement (any status, as if in force), decided and audited as a preview."""
        agreement = _visible(self, request, object_id)
        if agreement is None:
            return _missing(self, request, object_id)
        if not self.stewards_provider(request, agreement):
            raise PermissionDenied(f"only a steward of {agreement.provider} previews its data")
        preview = access_preview(agreement, steward_participant=agreement.provider, credential=admin_credential(request))
        back = reverse("admin:sharing_agreement_change", args=[agreement.pk])
        return _page(self, request, "admin/sharing/preview.html", f"Access preview: what {agreement.consumer} would see now",
                     preview=preview, original=agreement, summary=agreement_summary(agreement), back_url=back,
                     picture_url=reverse("admin:sharing_agreement_scope_picture", args=[agreement.pk]), unsaved=False)

    def changes_view(self, request, object_id):
        """The terms that differ from the version this one amends (old → new), and both readable summaries."""
        agreement = _visible(self, request, object_id)
        if agreement is None:
            return _missing(self, request, object_id)
        previous = self.get_queryset(request).filter(pk=agreement.previous_id).first() if agreement.previous_id else None
        if previous is None:
            self.message_user(request, f"{agreement}: version {agreement.version} amends no version you can see.", messages.WARNING)
            return HttpResponseRedirect(reverse("admin:sharing_agreement_change", args=[agreement.pk]))
        return _page(self, request, "admin/sharing/agreement/changes.html", f"Changes from version {previous.version}",
                     original=agreement, previous=previous, changes=agreement_changes(previous, agreement),
                     old_summary=agreement_summary(previous), new_summary=agreement_summary(agreement))

    def picture_view(self, request, object_id):
        """PNG of the provider's grid map with the agreement's scope in colour: for a steward of the provider only."""
        agreement = _visible(self, request, object_id)
        if agreement is None:
            raise Http404("no such agreement")
        if not self.stewards_provider(request, agreement):
            raise PermissionDenied(f"only a steward of {agreement.provider} sees its grid")
        return _png(scope_picture(agreement))

    # the lifecycle
    def transition(self, request, queryset, step: str, done: str) -> None:
        """One lifecycle step on each selected agreement, acting for its provider; reports each one."""
        for agreement in queryset:
            if not self.stewards_provider(request, agreement):
                self.message_user(request, f"{agreement}: only a steward of {agreement.provider} can {step} it.", messages.ERROR)
                continue
            try:
                moved = services.agreement_transition(agreement=agreement, step=step, actor=agreement.provider, user=request.user,
                                                      reason=f"{done} in the admin by a steward of {agreement.provider}",
                                                      credential=admin_credential(request))
            except services.LifecycleError as exc:
                self.message_user(request, f"{agreement}: {exc.message}.", messages.ERROR)
            else:
                self.message_user(request, f"{moved}: {done}.", messages.SUCCESS)

    @admin.action(description="Amend: a new draft version of the selected agreements (then edit, offer and activate it)",
                  permissions=["change"])
    def amend(self, request, queryset):
        created = []
        for agreement in queryset:
            if not self.stewards_provider(request, agreement):
                self.message_user(request, f"{agreement}: only a steward of {agreement.provider} can amend it.", messages.ERROR)
                continue
            if agreement.status == Status.DRAFT:
                self.message_user(request, f"{agreement}: a draft is edited directly, not amended.", messages.ERROR)
                continue
            try:
                amendment = services.agreement_amend(agreement=agreement, actor=agreement.provider, user=request.user,
                                                     credential=admin_credential(request))
            except services.LifecycleError as exc:
                self.message_user(request, f"{agreement}: {exc.message}.", messages.ERROR)
            except OntologyError as exc:
                self.message_user(request, f"{agreement}: {' '.join(_odrl_messages(exc))}", messages.ERROR)
            except ValidationError as exc:
                self.message_user(request, f"{agreement}: {' '.join(exc.messages)}", messages.ERROR)
            else:
                created.append(amendment)
                self.message_user(request, f"{amendment}: drafted, replacing version {agreement.version} once activated.", messages.SUCCESS)
        if len(created) == 1:
            return HttpResponseRedirect(reverse("admin:sharing_agreement_change", args=[created[0].pk]))
        return None


# --- API clients -----------------------------------------------------------------------------------

SHOWN_ONCE_TEMPLATE = """{% extends "admin/base_site.html" %}
{% block breadcrumbs %}<div class="breadcrumbs"><a href="{% url 'admin:index' %}">Home</a> › <a href="{{ changelist_url }}">API clients</a>
</div>{% endblock %}
{% block content %}<p>Copy the secret now: only its hash is stored, and it is not shown again.
Reloading this page would issue another secret.</p><p><a href="{{ changelist_url }}">Back to the API clients</a></p>{% endblock %}"""


def _scope_choices() -> list[tuple[str, str]]:
    return [(scope, f"{scope}: {description}") for scope, description in oauth2_settings.SCOPES.items()]


class ApiClientIssueForm(forms.ModelForm):
    """What `api_client_issue` needs: a name, the participant, its scopes and an optional expiry."""

    name = forms.CharField(max_length=255, help_text="What the client is, for people (the OAuth2 application's name).")
    scopes = forms.MultipleChoiceField(choices=_scope_choices, widget=forms.CheckboxSelectMultiple,
                                       help_text="The scopes the client may be granted.")

    class Meta:
        model = ApiClient
        fields = ["participant", "scopes", "expires_at"]

    def clean_scopes(self) -> str:
        return " ".join(self.cleaned_data["scopes"])

    def clean_expires_at(self):
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise ValidationError("must be in the future")
        return expires_at


@admin.register(ApiClient)
class ApiClientAdmin(StewardedAdmin):
    """OAuth2 clients of the steward's participants: issued here (the secret is shown once), rotated and revoked by actions."""

    list_display = ["name", "participant", "scopes", "created_at", "expires_at", "revoked_at"]
    list_filter = [("participant", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["application", "participant"]
    search_fields = ["application__name", "application__client_id"]
    actions = ["rotate_secret", "revoke"]
    ISSUED = ["name", "client_id", "participant", "scopes", "created_at", "expires_at", "revoked_at"]
    party_fields = ("participant",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("application", "participant")

    def has_change_permission(self, request, obj=None):
        """Rotate and revoke (actions) need it; a client itself is only viewed, as nothing is editable once issued."""
        return obj is None and self.has_view_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiClientIssueForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["name", "participant", "scopes", "expires_at"] if obj is None else self.ISSUED

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.ISSUED

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "participant" and not is_superuser(request):
            kwargs["queryset"] = Participant.objects.filter(pk__in=list(stewarded(request)))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="name", ordering="application__name")
    def name(self, obj: ApiClient) -> str:
        return obj.application.name

    @admin.display(description="client id")
    def client_id(self, obj: ApiClient) -> str:
        return obj.application.client_id

    def save_model(self, request, obj, form, change):
        client, client_id, secret = api_client_issue(participant=obj.participant, name=form.cleaned_data["name"], scopes=obj.scopes,
                                                     expires_at=obj.expires_at)
        obj.pk, obj._state.adding = client.pk, False
        obj.refresh_from_db()
        self.message_user(request, f"API client “{client.application.name}” issued for {client.participant}. Client id: {client_id} — "
                                   f"client secret: {secret}", messages.SUCCESS)

    def response_add(self, request, obj, post_url_continue=None):
        return self.secret_page(request)

    def secret_page(self, request) -> HttpResponse:
        """The page that shows a new secret: rendered in this response, so the message holding it is never stored.

        (A redirect would park the message in the messages cookie or the session until the next page.)
        """
        context = {**self.admin_site.each_context(request), "title": "API client secret", "opts": self.opts,
                   "changelist_url": reverse("admin:sharing_apiclient_changelist")}
        response = HttpResponse(engines["django"].from_string(SHOWN_ONCE_TEMPLATE).render(context, request))
        add_never_cache_headers(response)
        return response

    @admin.action(description="Rotate the secret of the selected clients (the old one stops working; shown once)",
                  permissions=["change"])
    def rotate_secret(self, request, queryset):
        rotated = False
        for client in queryset:
            if client.revoked_at is not None:
                self.message_user(request, f"{client}: revoked; issue a new client instead.", messages.ERROR)
                continue
            secret = api_client_rotate(client=client)
            self.log_change(request, client, "Rotated the client secret.")
            self.message_user(request, f"{client}: new client secret: {secret}", messages.SUCCESS)
            rotated = True
        return self.secret_page(request) if rotated else None

    @admin.action(description="Revoke the selected clients (refused from the next request on)", permissions=["change"])
    def revoke(self, request, queryset):
        for client in queryset:
            if client.revoked_at is not None:
                continue
            api_client_revoke(client=client)
            self.log_change(request, client, "Revoked.")
            self.message_user(request, f"{client}: revoked.", messages.SUCCESS)


# --- the audit -------------------------------------------------------------------------------------


class ConsumerFilter(admin.SimpleListFilter):
    """Who asked (`participant_iri`): the steward's participants and the consumers of their agreements and requests."""

    title = "consumer (who asked)"
    parameter_name = "participant_iri"

    def lookups(self, request, model_admin):
        participants = Participant.objects.all()
        if not is_superuser(request):
            mine = list(stewarded(request))
            consumers = Agreement.objects.filter(provider_id__in=mine).values("consumer_id")
            requesters = AccessRequest.objects.filter(provider_id__in=mine).values("consumer_id")
            participants = participants.filter(Q(pk__in=mine) | Q(pk__in=consumers) | Q(pk__in=requesters))
        return [(iri, name) for iri, name in participants.order_by("name").values_list("iri", "name")[:FILTER_CHOICES]]

    def queryset(self, request, queryset):
        return queryset.filter(participant_iri=self.value()) if self.value() else queryset


class AgreementFilter(admin.SimpleListFilter):
    """Which agreement (`agreement_uid`): the agreements the steward sees, newest first."""

    title = "agreement"
    parameter_name = "agreement_uid"

    def lookups(self, request, model_admin):
        agreements = Agreement.objects.select_related("provider", "consumer").order_by("-id")
        if not is_superuser(request):
            mine = list(stewarded(request))
            agreements = agreements.filter(Q(provider_id__in=mine) | Q(consumer_id__in=mine))
        return [(a.uid, str(a)) for a in agreements[:FILTER_CHOICES]]

    def queryset(self, request, queryset):
        return queryset.filter(agreement_uid=self.value()) if self.value() else queryset


class PeriodFilter(admin.FieldListFilter):
    """A period of the field: `<field>__gte` (from, inclusive) and `<field>__lt` (before), each a date or an ISO date-time."""

    template = "admin/sharing/auditentry/period_filter.html"

    def __init__(self, field, request, params, model, model_admin, field_path):
        self.lookup_gte, self.lookup_lt = f"{field_path}__gte", f"{field_path}__lt"
        super().__init__(field, request, params, model, model_admin, field_path)
        self.title = "period"
        self.other_params = [(key, value) for key, values in request.GET.lists() for value in values
                             if key not in (self.lookup_gte, self.lookup_lt, "p", "e")]

    def expected_parameters(self):
        return [self.lookup_gte, self.lookup_lt]

    def text(self, name: str) -> str:
        value = self.used_parameters.get(name)
        return (value[-1] if value else "") if isinstance(value, list) else (value or "")

    @property
    def start_text(self) -> str:
        return self.text(self.lookup_gte)

    @property
    def end_text(self) -> str:
        return self.text(self.lookup_lt)

    def moment(self, name: str) -> datetime | None:
        text = self.text(name).strip()
        if not text:
            return None
        try:
            parsed = parse_datetime(text) or (datetime.combine(day, time()) if (day := parse_date(text)) else None)
        except ValueError:
            parsed = None
        if parsed is None:
            raise IncorrectLookupParameters(f"{name}: a date (YYYY-MM-DD) or an ISO date-time")
        return timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed

    def has_output(self):
        return True

    def queryset(self, request, queryset):
        start, end = self.moment(self.lookup_gte), self.moment(self.lookup_lt)
        if start is not None:
            queryset = queryset.filter(**{self.lookup_gte: start})
        if end is not None:
            queryset = queryset.filter(**{self.lookup_lt: end})
        return queryset

    def choices(self, changelist):
        today = timezone.localdate()
        yield {"selected": not (self.start_text or self.end_text), "display": "Any time",
               "query_string": changelist.get_query_string(remove=self.expected_parameters())}
        for label, days in (("Today", 0), ("Past 7 days", 7), ("Past 30 days", 30)):
            since = f"{today - timedelta(days=days):%Y-%m-%d}"
            yield {"selected": self.start_text == since and not self.end_text, "display": label,
                   "query_string": changelist.get_query_string({self.lookup_gte: since}, [self.lookup_lt])}


FILTER_CHOICES = 200  # a list filter offers at most this many choices (search narrows the rest)
MAX_EXPORT_ROWS = 100_000
EXPORT_CHUNK = 2000
EXPORT_FIELDS = ["id", "at", "participant_iri", "credential", "action", "resource", "purpose", "allowed", "rule", "agreement_uid",
                 "provider_iri", "method", "path", "query", "status_code", "records", "preview", "previous_hash", "entry_hash"]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    """A file-like object whose write returns the line: csv.writer then yields rows to a streaming response."""

    def write(self, value: str) -> str:
        return value


def _csv_cell(value) -> str:
    """A CSV cell: JSON for the query, ISO 8601 for times; text that a spreadsheet would run as a formula is quoted with '."""
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit, read-only for everyone: a steward reads the entries asked by or about its participants, filters them
    (who asked, agreement, purpose, period, previews) and exports the filtered list (CSV or JSON Lines, at most
    MAX_EXPORT_ROWS newest rows, streamed; the export itself is audited as `audit.export`)."""

    list_display = ["at", "participant_iri", "action", "resource", "purpose", "allowed", "rule", "provider_iri", "records", "status_code",
                    "preview"]
    list_filter = ["allowed", "preview", "action", "resource", "purpose", ConsumerFilter, AgreementFilter, ("at", PeriodFilter)]
    date_hierarchy = "at"
    search_fields = ["participant_iri", "agreement_uid"]
    show_full_result_count = False  # the audit only grows: no second COUNT(*) over it per page
    change_list_template = "admin/sharing/auditentry/change_list.html"

    def get_queryset(self, request):
        rows = super().get_queryset(request)
        if is_superuser(request):
            return rows
        iris = list(stewarded(request).values())
        return rows.filter(Q(provider_iri__in=iris) | Q(participant_iri__in=iris))

    def has_module_permission(self, request):
        return is_superuser(request) or bool(stewarded(request))

    def has_view_permission(self, request, obj=None):
        iris = set(stewarded(request).values())
        return is_superuser(request) or (bool(iris) and (obj is None or obj.provider_iri in iris or obj.participant_iri in iris))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        own = [path("export.<str:fmt>", self.admin_site.admin_view(self.export_view), name="sharing_auditentry_export")]
        return own + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        query = request.GET.copy()
        for name in ("p", "e"):
            query.pop(name, None)
        extra = {"export_query": f"?{query.urlencode()}" if query else "", "export_limit": MAX_EXPORT_ROWS}
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def export_view(self, request, fmt: str):
        """The filtered list as CSV or JSON Lines, newest first, at most MAX_EXPORT_ROWS rows; audited before it streams."""
        if fmt not in ("csv", "jsonl"):
            raise Http404("export as csv or jsonl")
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            rows = self.get_changelist_instance(request).queryset  # the page's filters, on the rows the user may see
        except IncorrectLookupParameters:
            return HttpResponseRedirect(f"{reverse('admin:sharing_auditentry_changelist')}?e=1")
        newest = rows.order_by("-id").values_list("id", flat=True).first()
        rows = rows.filter(id__lte=newest) if newest is not None else rows.none()  # a snapshot: later entries (this export's) stay out
        found = rows.order_by()[:MAX_EXPORT_ROWS + 1].count()
        count, truncated = min(found, MAX_EXPORT_ROWS), found > MAX_EXPORT_ROWS
        mine = stewarded(request)
        iri = mine[min(mine)] if mine else ""
        audit_record(participant_iri=iri, credential=admin_credential(request), action="audit.export", resource="audit", purpose="",
                     allowed=True, rule="steward" if mine else "superuser", agreement_uid="", provider_iri=iri, method=request.method,
                     path=request.path, query={**dict(request.GET.lists()), "format": fmt, "truncated": "yes" if truncated else "no",
                                               "limit": str(MAX_EXPORT_ROWS)}, status_code=200, records=count)
        lines = self._csv_lines(rows, count) if fmt == "csv" else self._jsonl_lines(rows, count)
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8" if fmt == "csv" else "application/jsonl")
        response["Content-Disposition"] = f'attachment; filename="audit-{timezone.now():%Y%m%dT%H%M%S}.{fmt}"'
        response["X-Export-Rows"], response["X-Export-Limit"] = str(count), str(MAX_EXPORT_ROWS)
        response["X-Export-Truncated"] = "true" if truncated else "false"
        add_never_cache_headers(response)
        return response

    @staticmethod
    def _chunks(rows, count: int):
        """The rows as dicts, newest first, read by keyset in chunks (never all in memory), `count` at most."""
        after, left = None, count
        while left > 0:
            page = rows.filter(id__lt=after) if after is not None else rows
            chunk = list(page.order_by("-id").values(*EXPORT_FIELDS)[:min(EXPORT_CHUNK, left)])
            yield from chunk
            if len(chunk) < min(EXPORT_CHUNK, left):
                return
            after, left = chunk[-1]["id"], left - len(chunk)

    def _csv_lines(self, rows, count: int):
        writer = csv.writer(_Echo())
        yield writer.writerow(EXPORT_FIELDS)
        for row in self._chunks(rows, count):
            yield writer.writerow([_csv_cell(row[name]) for name in EXPORT_FIELDS])

    def _jsonl_lines(self, rows, count: int):
        for row in self._chunks(rows, count):
            yield orjson.dumps(row) + b"\n"


# --- shared helpers of the workbench pages -----------------------------------------------------------


def _page(model_admin: admin.ModelAdmin, request, template: str, title: str, **context) -> TemplateResponse:
    """One of the workbench's own admin pages, with the admin's context (site, opts, breadcrumbs)."""
    context = {**model_admin.admin_site.each_context(request), "opts": model_admin.opts, "title": title,
               "changelist_url": reverse(f"admin:{model_admin.opts.app_label}_{model_admin.opts.model_name}_changelist"), **context}
    return TemplateResponse(request, template, context)


def _visible(model_admin: admin.ModelAdmin, request, object_id):
    """The row if the user may see it, else None: out-of-scope rows are answered as missing ones."""
    return model_admin.get_queryset(request).filter(pk=object_id).first()


def _missing(model_admin: admin.ModelAdmin, request, object_id) -> HttpResponseRedirect:
    """What the admin answers for a row that does not exist (a redirect to the index with a message)."""
    return model_admin._get_obj_does_not_exist_redirect(request, model_admin.opts, str(object_id))


def _feeder_label(name: str, iri: str) -> str:
    return name or _short_iri(iri)


def dataset_names(dataset_ids: list[str]) -> list[tuple[str, str]]:
    """(dataset id, readable name) per id, e.g. ("g3-f7-telemetry", "lv-sharing › feeder 0: telemetry")."""
    keys = {text: parse_dataset_id(text) for text in dataset_ids}
    grids = dict(Grid.objects.filter(pk__in={k.grid_id for k in keys.values() if k}).values_list("pk", "name"))
    feeders = {pk: _feeder_label(name, iri) for pk, name, iri in
               Feeder.objects.filter(pk__in={k.feeder_id for k in keys.values() if k and k.feeder_id}).values_list("pk", "name", "iri")}
    categories = dict(DataCategory.choices)
    named = []
    for text, key in keys.items():
        if key is None:
            named.append((text, "not a dataset id"))
            continue
        place = grids.get(key.grid_id, f"grid {key.grid_id} (no longer exists)")
        if key.feeder_id is not None:
            place += f" › {feeders.get(key.feeder_id, f'feeder {key.feeder_id} (no longer exists)')}"
        named.append((text, f"{place}: {categories.get(key.category, key.category)}"))
    return named


def _dataset_list(dataset_ids: list[str]):
    return format_html("<ul>{}</ul>", format_html_join("", "<li>{} <small>({})</small></li>",
                                                       ((name, text) for text, name in dataset_names(dataset_ids)))) \
        if dataset_ids else "—"


def _png(body: bytes) -> HttpResponse:
    response = HttpResponse(body, content_type="image/png")
    add_never_cache_headers(response)
    return response


def _error_text(exc: Exception) -> str:
    if isinstance(exc, OntologyError):
        return " ".join(_odrl_messages(exc))
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc)


REFUSED = (OntologyError, ValidationError)  # RequestError and LifecycleError are OntologyErrors


# --- the steward's inbox: access requests -------------------------------------------------------------

RequestStatus = AccessRequest.Status
APPROVE, APPROVE_AS_OFFER, REJECT, COUNTER_OFFER, PREVIEW = ("Approve (put in force)", "Approve as an offer (consumer accepts)",
                                                             "Reject…", "Counter-offer…", "Preview access")


PARTICIPLES = {"approve": "approved", "reject": "rejected", "counter-offer": "counter-offered"}


class RequestDirectionFilter(admin.SimpleListFilter):
    """Requests made to the steward's participants (to review) or by them (to follow)."""

    title = "direction"
    parameter_name = "direction"

    def lookups(self, request, model_admin):
        return [("received", "made to my participants (to review)"), ("made", "made by my participants")]

    def queryset(self, request, queryset):
        mine = list(stewarded(request))
        if self.value() == "received":
            return queryset.filter(provider_id__in=mine)
        if self.value() == "made":
            return queryset.filter(consumer_id__in=mine)
        return queryset


class RejectForm(forms.Form):
    """Why a request is rejected: the consumer reads it."""

    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
                             error_messages={"required": "Say why the request is rejected."},
                             help_text="Sent to the consumer with the rejection (at most 500 characters).")


DATE_TIME_WIDGET = {"date_format": "%Y-%m-%d", "time_format": "%H:%M:%S",
                    "date_attrs": {"placeholder": "YYYY-MM-DD", "size": 10}, "time_attrs": {"placeholder": "HH:MM:SS", "size": 8}}


def _moment(label: str, required: bool, help_text: str) -> forms.SplitDateTimeField:
    return forms.SplitDateTimeField(label=label, required=required, help_text=help_text,
                                    widget=forms.SplitDateTimeWidget(**DATE_TIME_WIDGET))


class CounterOfferForm(forms.Form):
    """The terms a counter-offer may change (`COUNTERABLE_TERMS`), prefilled with what an approval would grant."""

    valid_from = _moment("Valid from", True, f"Date and time ({settings.TIME_ZONE}).")
    valid_until = _moment("Valid until", True, f"Date and time ({settings.TIME_ZONE}).")
    resolution = forms.ChoiceField(choices=Resolution.choices, help_text="Finest telemetry resolution granted.")
    categories = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, help_text="Data categories granted (of the offer's).")
    feeder_iris = IriListField(required=False, label="Feeders",
                               help_text="Feeders of the offer's grid (IRIs), one a line; none: the whole grid.")
    group_by = forms.ChoiceField(choices=GroupBy.choices, help_text="The provider's groups telemetry is aggregated over.")
    min_group_size = forms.IntegerField(min_value=1, label="Minimum group size (k)",
                                        help_text="Aggregates over fewer meters than this are suppressed.")
    dropped_fields = forms.MultipleChoiceField(choices=CHOICE_LISTS["dropped_fields"], widget=forms.CheckboxSelectMultiple,
                                               required=False, help_text=CHOICE_HELP["dropped_fields"])
    data_start = _moment("Data from", False, "Only data time-stamped at or after this (empty: no limit).")
    data_end = _moment("Data before", False, "Only data time-stamped before this (empty: no limit).")
    delete_after_days = forms.IntegerField(min_value=0, required=False, help_text="Duty: delete the data this many days after reading.")
    attribution = forms.CharField(max_length=500, required=False, help_text="Duty: attribute the data with this text.")
    reason = forms.CharField(max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 80}),
                             help_text="Why these terms (sent to the consumer).")

    def __init__(self, *args, req: AccessRequest, **kwargs):
        self.req = req
        terms = access_requests.request_terms(req)
        super().__init__(*args, initial={name: terms[name] for name in access_requests.COUNTERABLE_TERMS}, **kwargs)
        labels = dict(DataCategory.choices)
        self.fields["categories"].choices = [(c, labels.get(c, c)) for c in req.offer.categories]

    def clean_feeder_iris(self) -> list[str]:
        iris = self.cleaned_data["feeder_iris"]
        offer = self.req.offer
        allowed = set(offer.feeder_iris) if offer.feeder_iris else set(offer.grid.feeders.values_list("iri", flat=True))
        unknown = [iri for iri in iris if iri not in allowed]
        if unknown:
            raise ValidationError(f"not a feeder of the offer: {', '.join(unknown[:3])}")
        return iris

    def changes(self) -> dict:
        """The terms that differ from the request's (datetimes compared to the second, lists as sets)."""
        return {name: self.cleaned_data[name] for name in access_requests.COUNTERABLE_TERMS
                if not _same_term(self.initial[name], self.cleaned_data[name])}


def _same_term(old, new) -> bool:
    if isinstance(old, datetime) and isinstance(new, datetime):
        return old.replace(microsecond=0) == new.replace(microsecond=0)
    if isinstance(old, list | tuple) or isinstance(new, list | tuple):
        return sorted(map(str, old or [])) == sorted(map(str, new or []))
    return ("" if old is None else old) == ("" if new is None else new)


REQUEST_FIELDSETS = [
    ("Request", {"fields": ["consumer", "provider", "status", "offer", "datasets_named", "purpose", "period", "resolution", "message",
                            "created_at"]}),
    ("What it grants", {"fields": ["grants", "agreement_link"]}),
    ("Decision", {"fields": ["decided_at", "decided_by", "reason", "counter_changes", "answered_at"]}),
]


@admin.register(AccessRequest)
class AccessRequestAdmin(StewardedAdmin):
    """The steward's inbox: requests made to its participants (reviewed here) and, read-only, those its participants made.

    A request is read-only; approving, rejecting and counter-offering go through `sharing.access_requests` with the
    request's provider as the actor, only for a steward of that provider (superuser or not). Requests are made by
    consumers through the API: nobody adds or deletes them here.
    """

    list_display = ["request_number", "consumer", "provider", "purpose", "status", "datasets_count", "period", "created_at"]
    list_filter = ["status", "purpose", RequestDirectionFilter]
    list_select_related = ["consumer", "provider"]
    search_fields = ["consumer__name", "provider__name", "message"]
    ordering = [Case(When(status=RequestStatus.PENDING, then=Value(0)), default=Value(1), output_field=IntegerField()).asc(),
                "-created_at", "-id"]
    fieldsets = REQUEST_FIELDSETS
    readonly_fields = [name for _, options in REQUEST_FIELDSETS for name in options["fields"]]
    actions = ["approve", "approve_as_offer", "reject", "counter_offer", "preview_access"]
    change_form_template = "admin/sharing/accessrequest/change_form.html"
    party_fields = ("provider", "consumer")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("consumer", "provider", "offer__grid", "agreement", "decided_by")

    # permissions: the steward relation (module docstring, StewardedAdmin)
    def has_change_permission(self, request, obj=None):
        """The review actions need it; a request itself is never edited, so its page is read-only."""
        return obj is None and self.has_view_permission(request)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def stewards_provider(self, request, req: AccessRequest) -> bool:
        """Whether the user may decide for the request's provider: its steward, whether superuser or not."""
        return req.provider_id in stewarded(request)

    # the columns and fields
    @admin.display(description="request", ordering="id")
    def request_number(self, obj: AccessRequest) -> str:
        return f"request {obj.pk}"

    @admin.display(description="datasets")
    def datasets_count(self, obj: AccessRequest) -> int:
        return len(obj.datasets)

    @admin.display(description="period", ordering="valid_from")
    def period(self, obj: AccessRequest) -> str:
        return f"{_when(obj.valid_from)} → {_when(obj.valid_until)}"

    @admin.display(description="datasets")
    def datasets_named(self, obj: AccessRequest):
        return _dataset_list(obj.datasets)

    @admin.display(description="grants")
    def grants(self, obj: AccessRequest) -> str:
        if obj.agreement_id:
            return agreement_summary(obj.agreement)
        if obj.status != RequestStatus.PENDING:
            return "nothing (no agreement was made)"
        return f"If approved: {agreement_summary(access_requests.request_preview_agreement(obj))}"

    @admin.display(description="agreement")
    def agreement_link(self, obj: AccessRequest):
        if not obj.agreement_id:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("admin:sharing_agreement_change", args=[obj.agreement_id]), obj.agreement)

    @admin.display(description="counter-offer changed")
    def counter_changes(self, obj: AccessRequest) -> str:
        return "; ".join(f"{name.replace('_', ' ')}: {value}" for name, value in sorted(obj.counter_terms.items())) or "—"

    # the change page: read-only, with the decisions as buttons
    def change_view(self, request, object_id, form_url="", extra_context=None):
        req = _visible(self, request, object_id) if parse_id(object_id) is not None else None
        can_review = req is not None and self.stewards_provider(request, req)
        extra = {"can_review": can_review, "can_decide": can_review and req.status == RequestStatus.PENDING,
                 "labels": {"approve": APPROVE, "approve_as_offer": APPROVE_AS_OFFER, "reject": REJECT, "counter_offer": COUNTER_OFFER,
                            "preview": PREVIEW}}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def get_urls(self):
        view = self.admin_site.admin_view
        own = [path("<int:object_id>/approve/", view(self.approve_view), name="sharing_accessrequest_approve"),
               path("<int:object_id>/approve-as-offer/", view(self.approve_view), {"activate": False},
                    name="sharing_accessrequest_approve_offer"),
               path("<int:object_id>/reject/", view(self.reject_view), name="sharing_accessrequest_reject"),
               path("<int:object_id>/counter-offer/", view(self.counter_view), name="sharing_accessrequest_counter"),
               path("<int:object_id>/preview/", view(self.preview_view), name="sharing_accessrequest_preview"),
               path("<int:object_id>/scope.png", view(self.picture_view), name="sharing_accessrequest_scope_picture")]
        return own + super().get_urls()

    def _change_page(self, req: AccessRequest) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:sharing_accessrequest_change", args=[req.pk]))

    def _reviewable(self, request, req: AccessRequest, step: str) -> bool:
        """Whether the user may take `step` on the request now; says why not."""
        if not self.stewards_provider(request, req):
            self.message_user(request, f"{req}: only a steward of {req.provider} can {step} it.", messages.ERROR)
            return False
        if req.status != RequestStatus.PENDING:
            self.message_user(request, f"{req}: a request that is {req.status} cannot be {PARTICIPLES[step]}.", messages.ERROR)
            return False
        return True

    # the steps, each through sharing.access_requests with the provider as the actor
    def _approve(self, request, req: AccessRequest, *, activate: bool) -> bool:
        if not self._reviewable(request, req, "approve"):
            return False
        try:
            done = access_requests.request_approve(req=req, actor=req.provider, user=request.user, activate=activate,
                                                   credential=admin_credential(request))
        except REFUSED as exc:
            self.message_user(request, f"{req}: {_error_text(exc)}", messages.ERROR)
            return False
        if activate:
            self.message_user(request, f"Request {done.pk} of {done.consumer}: approved; the agreement is in force ({done.agreement}).",
                              messages.SUCCESS)
        else:
            self.message_user(request, f"Request {done.pk} of {done.consumer}: approved as an offer; {done.consumer} accepts it to put "
                                       f"it in force ({done.agreement}).", messages.SUCCESS)
        return True

    def _reject(self, request, req: AccessRequest, reason: str) -> bool:
        if not self._reviewable(request, req, "reject"):
            return False
        try:
            done = access_requests.request_reject(req=req, actor=req.provider, reason=reason, user=request.user,
                                                  credential=admin_credential(request))
        except REFUSED as exc:
            self.message_user(request, f"{req}: {_error_text(exc)}", messages.ERROR)
            return False
        self.message_user(request, f"Request {done.pk} of {done.consumer}: rejected.", messages.SUCCESS)
        return True

    def approve_view(self, request, object_id, activate: bool = True):
        """The page's Approve buttons (POST): in force at once, or (`activate=False`) as an offer the consumer accepts."""
        req = _visible(self, request, object_id)
        if req is None:
            return _missing(self, request, object_id)
        if request.method == "POST":
            self._approve(request, req, activate=activate)
        return self._change_page(req)

    def reject_view(self, request, object_id):
        req = _visible(self, request, object_id)
        if req is None:
            return _missing(self, request, object_id)
        if not self._reviewable(request, req, "reject"):
            return self._change_page(req)
        form = RejectForm(request.POST if request.method == "POST" else None)
        if form.is_valid() and self._reject(request, req, form.cleaned_data["reason"]):
            return self._change_page(req)
        return _page(self, request, "admin/sharing/accessrequest/reject.html", f"Reject request {req.pk}", requests=[req], form=form,
                     original=req, button=REJECT.rstrip("…"))

    def counter_view(self, request, object_id):
        req = _visible(self, request, object_id)
        if req is None:
            return _missing(self, request, object_id)
        if not self._reviewable(request, req, "counter-offer"):
            return self._change_page(req)
        form = CounterOfferForm(request.POST if request.method == "POST" else None, req=req)
        if form.is_valid():
            changes = form.changes()
            if not changes:
                form.add_error(None, "Change at least one term: otherwise approve the request as an offer.")
            else:
                try:
                    done = access_requests.request_counter(req=req, actor=req.provider, changes=changes, reason=form.cleaned_data["reason"],
                                                           user=request.user, credential=admin_credential(request))
                except REFUSED as exc:
                    form.add_error(None, _error_text(exc))
                else:
                    self.message_user(request, f"Request {done.pk} of {done.consumer}: counter-offered ({', '.join(sorted(changes))} "
                                               f"changed); {done.consumer} accepts or declines ({done.agreement}).", messages.SUCCESS)
                    return self._change_page(done)
        return _page(self, request, "admin/sharing/accessrequest/counter_offer.html", f"Counter-offer to request {req.pk}", form=form,
                     original=req, grants=agreement_summary(access_requests.request_preview_agreement(req)),
                     datasets=dataset_names(req.datasets), button=COUNTER_OFFER.rstrip("…"))

    def _previewed(self, req: AccessRequest) -> Agreement:
        return req.agreement if req.agreement_id else access_requests.request_preview_agreement(req)

    def preview_view(self, request, object_id):
        req = _visible(self, request, object_id)
        if req is None:
            return _missing(self, request, object_id)
        if not self.stewards_provider(request, req):
            raise PermissionDenied(f"only a steward of {req.provider} previews its data")
        agreement = self._previewed(req)
        preview = access_preview(agreement, steward_participant=req.provider, credential=admin_credential(request))
        return _page(self, request, "admin/sharing/preview.html", f"Access preview: what {req.consumer} would see now", preview=preview,
                     original=req, summary=agreement_summary(agreement),
                     back_url=reverse("admin:sharing_accessrequest_change", args=[req.pk]),
                     picture_url=reverse("admin:sharing_accessrequest_scope_picture", args=[req.pk]), unsaved=agreement.pk is None)

    def picture_view(self, request, object_id):
        req = _visible(self, request, object_id)
        if req is None:
            raise Http404("no such request")
        if not self.stewards_provider(request, req):
            raise PermissionDenied(f"only a steward of {req.provider} sees its grid")
        return _png(scope_picture(self._previewed(req)))

    # the same steps as actions on the selected requests
    @admin.action(description=APPROVE, permissions=["change"])
    def approve(self, request, queryset):
        for req in queryset:
            self._approve(request, req, activate=True)

    @admin.action(description=APPROVE_AS_OFFER, permissions=["change"])
    def approve_as_offer(self, request, queryset):
        for req in queryset:
            self._approve(request, req, activate=False)

    @admin.action(description=REJECT, permissions=["change"])
    def reject(self, request, queryset):
        """An intermediate page asks for the reason, then rejects every selected request with it."""
        form = RejectForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            for req in queryset:
                self._reject(request, req, form.cleaned_data["reason"])
            return None
        return _page(self, request, "admin/sharing/accessrequest/reject.html", "Reject access requests", requests=list(queryset), form=form,
                     action="reject", action_checkbox_name=ACTION_CHECKBOX_NAME, button=REJECT.rstrip("…"))

    def _one(self, request, queryset, step: str) -> AccessRequest | None:
        found = list(queryset[:2])
        if len(found) != 1:
            self.message_user(request, f"Select one request to {step}.", messages.ERROR)
            return None
        return found[0]

    @admin.action(description=COUNTER_OFFER, permissions=["change"])
    def counter_offer(self, request, queryset):
        req = self._one(request, queryset, "counter-offer")
        return HttpResponseRedirect(reverse("admin:sharing_accessrequest_counter", args=[req.pk])) if req else None

    @admin.action(description=PREVIEW, permissions=["change"])
    def preview_access(self, request, queryset):
        req = self._one(request, queryset, "preview")
        return HttpResponseRedirect(reverse("admin:sharing_accessrequest_preview", args=[req.pk])) if req else None


# --- offers --------------------------------------------------------------------------------------------

OFFER_CHOICE_LISTS = {
    "categories": (DataCategory.choices, "Data categories offered (at least one)."),
    "purposes": (Purpose.choices, "Purposes a consumer may ask for (at least one)."),
    "dropped_fields": (CHOICE_LISTS["dropped_fields"], CHOICE_HELP["dropped_fields"]),
    "prohibitions": (CHOICE_LISTS["prohibitions"], CHOICE_HELP["prohibitions"]),
    "audience": (Participant.Role.choices, "Participant roles the offer is shown to; none ticked: every participant."),
}
OFFER_FIELDSETS = [
    (None, {"fields": ["title", "description", "provider", "grid", "feeder_iris"]}),
    ("What may be requested", {"fields": ["categories", "purposes", "resolution", "max_days", "audience"]}),
    ("Obligations of the agreements it leads to", {"fields": ["group_by", "min_group_size", "dropped_fields", "prohibitions", "attribution",
                                                              "delete_after_days"]}),
]
OFFER_STATE = ["uid", "published", "created_at", "datasets", "requests_made"]


@admin.register(DatasetOffer)
class DatasetOfferAdmin(StewardedAdmin):
    """Offers of the steward's participants' grids: created and edited here, published and unpublished by actions.

    An offer that was requested is never deleted (requests point at it): unpublish it instead. Publishing commits the
    provider, so, as for agreements, only a steward of the provider publishes, superuser or not.
    """

    list_display = ["title", "provider", "grid", "categories_text", "purposes_text", "published", "requests_count", "created_at"]
    list_filter = ["published"]
    list_select_related = ["provider", "grid"]
    search_fields = ["title", "uid", "grid__name"]
    actions = ["publish", "unpublish"]
    party_fields = ("provider",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("provider", "grid").annotate(requests_total=Count("requests"))

    def has_change_permission(self, request, obj=None):
        """A published offer commits its provider: only the provider's steward changes it (a superuser drafts unpublished ones)."""
        if obj is not None and obj.published and obj.provider_id not in stewarded(request):
            return False
        return self.has_view_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        """Only an offer nobody requested, from its own page (no bulk delete): requested offers are unpublished instead."""
        return obj is not None and self.has_change_permission(request, obj) and not obj.requests.exists()

    # the form
    def get_fieldsets(self, request, obj=None):
        return OFFER_FIELDSETS if obj is None else [*OFFER_FIELDSETS, ("State", {"fields": OFFER_STATE})]

    def get_readonly_fields(self, request, obj=None):
        """Once created, an offer's provider and grid are fixed (requests name its datasets by grid): a new grid is a new offer."""
        return [*OFFER_STATE, "provider", "grid"] if obj is not None else []

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name in OFFER_CHOICE_LISTS:
            choices, help_text = OFFER_CHOICE_LISTS[db_field.name]
            return forms.MultipleChoiceField(choices=choices, widget=forms.CheckboxSelectMultiple, required=not db_field.blank,
                                             label=db_field.verbose_name.capitalize(), help_text=help_text)
        if db_field.name == "feeder_iris":
            return IriListField(required=False, label="Feeders", help_text=f"{db_field.help_text} One IRI a line.")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if not is_superuser(request):
            mine = list(stewarded(request))
            if db_field.name == "provider":
                kwargs["queryset"] = Participant.objects.filter(pk__in=mine)
            elif db_field.name == "grid":
                kwargs["queryset"] = Grid.objects.filter(owner_id__in=mine).select_related("owner")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None and "grid" in form.base_fields:  # an offer's grid is one of its provider's
            form.base_fields["grid"].queryset = Grid.objects.filter(owner_id=obj.provider_id)
        return form

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        mine = stewarded(request)
        if len(mine) == 1 and "provider" not in initial:
            initial["provider"] = next(iter(mine))
        return initial

    # the columns and fields
    @admin.display(description="categories")
    def categories_text(self, obj: DatasetOffer) -> str:
        labels = dict(DataCategory.choices)
        return ", ".join(labels.get(c, c) for c in obj.categories)

    @admin.display(description="purposes")
    def purposes_text(self, obj: DatasetOffer) -> str:
        labels = dict(Purpose.choices)
        return ", ".join(labels.get(p, p) for p in obj.purposes)

    @admin.display(description="requests", ordering="requests_total")
    def requests_count(self, obj: DatasetOffer) -> int:
        return getattr(obj, "requests_total", None) or obj.requests.count()

    @admin.display(description="requests")
    def requests_made(self, obj: DatasetOffer):
        count = obj.requests.count()
        if not count:
            return "none"
        url = f"{reverse('admin:sharing_accessrequest_changelist')}?offer__id__exact={obj.pk}"
        return format_html('<a href="{}">{} request{}</a>', url, count, "s" if count != 1 else "")

    @admin.display(description="datasets offered")
    def datasets(self, obj: DatasetOffer):
        return _dataset_list([key.id for key in offer_datasets(obj)])

    # saving and publishing, audited as the API does
    def _audit(self, request, offer: DatasetOffer, step: str) -> None:
        audit_record(participant_iri=offer.provider.iri, credential=admin_credential(request), action=f"offer.{step}", resource="offer",
                     purpose="", allowed=True, rule="steward", agreement_uid=offer.uid, provider_iri=offer.provider.iri, method="", path="",
                     query={"published": str(offer.published)}, status_code=None, records=1)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.uid = obj.uid or f"urn:uuid:{uuid.uuid4()}"
            obj.published = False  # published by the action, by a steward of the provider
        elif not form.has_changed():
            return
        obj.save()
        self._audit(request, obj, "change" if change else "create")

    def _publish(self, request, queryset, published: bool) -> None:
        word = "published" if published else "unpublished"
        for offer in queryset:
            if offer.provider_id not in stewarded(request):
                self.message_user(request, f"{offer}: only a steward of {offer.provider} can change what it offers.", messages.ERROR)
                continue
            if offer.published == published:
                continue
            try:
                offer.published = published
                offer.full_clean()
            except ValidationError as exc:
                self.message_user(request, f"{offer}: {' '.join(exc.messages)}", messages.ERROR)
                continue
            offer.save(update_fields=["published"])
            self._audit(request, offer, "publish" if published else "unpublish")
            self.message_user(request, f"{offer}: {word}.", messages.SUCCESS)

    @admin.action(description="Publish the selected offers (shown in the catalog)", permissions=["change"])
    def publish(self, request, queryset):
        self._publish(request, queryset, True)

    @admin.action(description="Unpublish the selected offers (hidden from the catalog; requests made stay)", permissions=["change"])
    def unpublish(self, request, queryset):
        self._publish(request, queryset, False)
