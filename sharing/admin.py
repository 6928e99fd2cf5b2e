"""Admin for data stewards: agreements with their lifecycle, API clients, and the audit (read-only).

Who sees what. A superuser sees every row. Any other staff user sees only the rows of the participants they
are a data steward of (`Participant.stewards`): agreements they provide (editable) or consume (read-only),
their participants' API clients, and audit entries asked by or about their participants. Out-of-scope rows
are absent (the admin answers as for a row that does not exist).

Permissions. Stewardship *is* the permission: `has_module/view/add/change_permission` check the steward
relation, so nobody assigns Django model permissions by hand, and for non-superusers those permissions are not
consulted at all (a staff user who stewards nothing sees nothing here, whatever Django permissions they hold).
A steward still needs `is_staff` to log in to the admin. Nobody deletes agreements, API clients or audit
entries: agreements are revoked, clients revoked, and the audit is append-only.

Lifecycle. Offer, activate, suspend, revoke and amend are actions that go through `sharing.services` with the
agreement's provider as the actor, and only for a steward of that provider, superuser or not: a superuser who
is not the provider's steward may draft, but not commit the provider to anything.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpResponse, HttpResponseRedirect
from django.template import engines
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from oauth2_provider.settings import oauth2_settings

from ontology.errors import OntologyError
from sharing import services
from sharing.audit import audit_record
from sharing.models import ASSET_TYPES, DROPPABLE_FIELDS, PROHIBITIONS, Agreement, ApiClient, AuditEntry, DataCategory, Purpose
from sharing.oauth import api_client_issue, api_client_revoke, api_client_rotate
from sharing.odrl import agreement_check
from twin.admin import ParticipantAdmin
from twin.models import Participant

Status = Agreement.Status


def stewarded(request) -> dict[int, str]:
    """The participants (pk → IRI) the request's user is a data steward of; the rule lives on `ParticipantAdmin`."""
    return ParticipantAdmin.stewarded(request)


def is_superuser(request) -> bool:
    return request.user.is_active and request.user.is_superuser


def admin_credential(request) -> str:
    """How the audit names a change made in the admin: kind and id, as `Principal.credential_label` does."""
    return f"admin:{request.user.pk}"


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
class AgreementAdmin(admin.ModelAdmin):
    """Agreements of the steward's participants: terms edited while a draft, lifecycle steps as actions."""

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

    def get_queryset(self, request):
        rows = super().get_queryset(request).select_related("provider", "consumer", "previous")
        if is_superuser(request):
            return rows
        mine = list(stewarded(request))
        return rows.filter(Q(provider_id__in=mine) | Q(consumer_id__in=mine))

    # permissions: the steward relation (module docstring)
    def has_module_permission(self, request):
        return is_superuser(request) or bool(stewarded(request))

    def has_view_permission(self, request, obj=None):
        mine = stewarded(request)
        return is_superuser(request) or (bool(mine) and (obj is None or obj.provider_id in mine or obj.consumer_id in mine))

    def has_add_permission(self, request):
        return is_superuser(request) or bool(stewarded(request))

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
class ApiClientAdmin(admin.ModelAdmin):
    """OAuth2 clients of the steward's participants: issued here (the secret is shown once), rotated and revoked by actions."""

    list_display = ["name", "participant", "scopes", "created_at", "expires_at", "revoked_at"]
    list_filter = [("participant", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["application", "participant"]
    search_fields = ["application__name", "application__client_id"]
    actions = ["rotate_secret", "revoke"]
    ISSUED = ["name", "client_id", "participant", "scopes", "created_at", "expires_at", "revoked_at"]

    def get_queryset(self, request):
        rows = super().get_queryset(request).select_related("application", "participant")
        return rows if is_superuser(request) else rows.filter(participant_id__in=list(stewarded(request)))

    def has_module_permission(self, request):
        return is_superuser(request) or bool(stewarded(request))

    def has_view_permission(self, request, obj=None):
        mine = stewarded(request)
        return is_superuser(request) or (bool(mine) and (obj is None or obj.participant_id in mine))

    def has_change_permission(self, request, obj=None):
        """Rotate and revoke (actions) need it; a client itself is only viewed, as nothing is editable once issued."""
        return obj is None and self.has_view_permission(request)

    def has_add_permission(self, request):
        return is_superuser(request) or bool(stewarded(request))

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


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit, read-only for everyone: a steward reads the entries asked by or about its participants."""

    list_display = ["at", "participant_iri", "action", "resource", "purpose", "allowed", "rule", "provider_iri", "records", "status_code"]
    list_filter = ["allowed", "action", "resource", "purpose"]
    date_hierarchy = "at"
    search_fields = ["participant_iri", "agreement_uid"]
    show_full_result_count = False  # the audit only grows: no second COUNT(*) over it per page

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
