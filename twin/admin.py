"""Admin for operators and stewards: list, search and edit grids and assets; saves are judged by the shapes.

Every save and delete of a grid or a grid part records the grid's next version when its content changed
(`twin.history`), with the admin user as its author; a delete retires what readings or results refer to.
"""

from django.contrib import admin, messages

from twin import history, models, services


@admin.register(models.Participant)
class ParticipantAdmin(admin.ModelAdmin):
    """Participants: a superuser sees all; a data steward sees and edits the ones it stewards, and registers new ones.

    The steward relation is the permission, here and in `sharing.admin` (which asks `stewarded`): for non-superusers
    Django's model permissions are not consulted, so nobody assigns them by hand. A steward needs `is_staff` to log in.
    """

    list_display = ["name", "iri"]
    search_fields = ["name", "iri"]
    fields = ["name", "iri", "roles", "members", "stewards"]
    filter_horizontal = ["members", "stewards"]

    @staticmethod
    def stewarded(request) -> dict[int, str]:
        """The participants (pk → IRI) the request's user is a data steward of, read once per request; none unless active staff."""
        found = getattr(request, "_gridtwin_stewarded", None)
        if found is None:
            user = request.user
            found = dict(models.Participant.objects.filter(stewards=user).values_list("pk", "iri")) \
                if user.is_active and user.is_staff else {}
            request._gridtwin_stewarded = found
        return found

    def get_queryset(self, request):
        rows = super().get_queryset(request)
        return rows if request.user.is_superuser else rows.filter(pk__in=list(self.stewarded(request)))

    def has_module_permission(self, request):
        return request.user.is_superuser or bool(self.stewarded(request))

    def has_view_permission(self, request, obj=None):
        mine = self.stewarded(request)
        return request.user.is_superuser or (bool(mine) and (obj is None or obj.pk in mine))

    has_change_permission = has_view_permission

    def has_add_permission(self, request):
        return request.user.is_superuser or bool(self.stewarded(request))

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_delete_permission(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return ["iri"] if obj is not None else []  # the IRI is the participant's identity in every agreement and audit entry

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "roles":
            from django import forms  # here, not at the top: this class is all of this module that the stewards' admin owns

            return forms.MultipleChoiceField(choices=models.Participant.Role.choices, widget=forms.CheckboxSelectMultiple,
                                             required=False, help_text="Roles of the organisation.")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        """A steward picks members and stewards among the people of its own participants only: the widget never lists the
        accounts of other organisations (a new person's account is made, and first attached, by a superuser)."""
        if db_field.name in ("members", "stewards") and not request.user.is_superuser:
            mine = list(self.stewarded(request))
            kwargs["queryset"] = db_field.remote_field.model.objects.filter(participants__in=mine).distinct().order_by("username")
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_related(self, request, form, formsets, change):
        """Stewards are members; a steward who registers a participant becomes its steward (or would lose it at once)."""
        super().save_related(request, form, formsets, change)
        participant = form.instance
        if not change and not request.user.is_superuser:
            participant.stewards.add(request.user)
        participant.members.add(*participant.stewards.all())
        request._gridtwin_stewarded = None


def has_readings(grid_id: int, meter_id: int | None = None) -> bool:
    """Whether meters of the grid (or that one meter) have readings: such rows are retired, never deleted (ARCHITECTURE.md)."""
    meters = models.Meter.objects.filter(grid_id=grid_id, telemetry_owner__isnull=False)
    return (meters.filter(pk=meter_id) if meter_id is not None else meters).exists()


def admin_author(request) -> history.Author:
    """The author of a version an admin write records: the signed-in user, through the admin."""
    return history.Author(via="admin", user=request.user, credential=f"admin session of {request.user.get_username()}")


class VersionedAdmin(admin.ModelAdmin):
    """A save takes the grid IRI's lock before it writes (as every write does, so two writes never wait for each other in
    opposite order) and records the grid's next version once the row and its related rows are saved (`save_related`)."""

    @staticmethod
    def grid_of(instance) -> models.Grid:
        return instance if isinstance(instance, models.Grid) else instance.grid

    def save_model(self, request, obj, form, change):
        history.lock_grid_iri(self.grid_of(obj).iri)
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        history.grid_version_record(grid=self.grid_of(form.instance), author=admin_author(request))


@admin.register(models.Grid)
class GridAdmin(VersionedAdmin):
    list_display = ["name", "owner", "source", "version", "updated_at"]
    list_filter = ["owner"]
    search_fields = ["name", "iri"]
    readonly_fields = ["version", "created_at", "updated_at"]

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (obj is None or not has_readings(obj.pk))

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset.exclude(meters__telemetry_owner__isnull=False))


class GridPartAdmin(VersionedAdmin):
    """Common list and search settings; foreign keys to buses are raw ids (grids have thousands).

    Retired rows are listed (with their `retired_at`) but are no longer part of the grid; a delete goes through
    `services.grid_parts_remove`: retired when readings, results or kept rows refer to the row, deleted otherwise.
    """

    search_fields = ["name", "iri"]
    list_filter = ["grid"]
    list_per_page = 50

    def get_list_display(self, request):
        fields = [f.name for f in self.model._meta.concrete_fields if f.name not in ("id", "part_iris", "grid")]
        return ["name", "grid", *[f for f in fields if f not in ("name", "iri")][:6]]

    def has_delete_permission(self, request, obj=None):
        if obj is not None and isinstance(obj, models.Meter) and has_readings(obj.grid_id, obj.pk):
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request, obj):
        self.delete_queryset(request, type(obj).objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        if queryset.model is models.Meter:
            queryset = queryset.filter(telemetry_owner__isnull=True)
        counts = services.grid_parts_remove(rows=queryset, author=admin_author(request))
        if counts["retired"]:
            self.message_user(request, f"{counts['retired']} row(s) retired instead of deleted: readings or results refer to them.",
                              messages.WARNING)

    def get_deleted_objects(self, objs, request):
        """Results that refer to a row do not block its delete: the row is retired and they stay (Django would list them)."""
        deleted, counts, permissions_needed, _ = super().get_deleted_objects(objs, request)
        return deleted, counts, permissions_needed, []

    def get_raw_id_fields(self, request):
        return [f.name for f in self.model._meta.concrete_fields if f.is_relation and f.name not in ("grid", "owner")]


for model in [models.Feeder, models.BaseVoltage, models.Bus, *models.ASSET_MODELS]:
    admin.site.register(model, GridPartAdmin)

from twin.loadflow import admin as loadflow_admin  # noqa: E402, F401  (load-flow runs, violations, hosting capacity)


@admin.register(models.Credential)
class CredentialAdmin(admin.ModelAdmin):
    """Tokens and gateway keys: issued by commands (the secret is shown once), revoked here."""

    list_display = ["prefix", "kind", "participant", "user", "name", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["kind", ("participant", admin.RelatedOnlyFieldListFilter)]
    readonly_fields = ["kind", "participant", "user", "prefix", "created_at", "last_used_at", "revoked_at"]  # revoked for good
    search_fields = ["prefix", "name"]
    actions = ["revoke_credentials"]

    def get_queryset(self, request):
        rows = super().get_queryset(request).select_related("participant", "user")
        return rows if request.user.is_superuser else rows.filter(participant_id__in=list(ParticipantAdmin.stewarded(request)))

    def has_module_permission(self, request):
        return request.user.is_superuser or bool(ParticipantAdmin.stewarded(request))

    def has_view_permission(self, request, obj=None):
        mine = ParticipantAdmin.stewarded(request)
        return request.user.is_superuser or (bool(mine) and (obj is None or obj.participant_id in mine))

    has_change_permission = has_view_permission

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_delete_permission(request, obj)

    @admin.action(description="Revoke the selected credentials (refused from now on)", permissions=["change"])
    def revoke_credentials(self, request, queryset):
        revoked = 0
        for credential in queryset.filter(revoked_at__isnull=True):
            credential.revoke()
            self.log_change(request, credential, "Revoked.")
            revoked += 1
        self.message_user(request, f"Revoked {revoked} credential{'s' if revoked != 1 else ''}.")
