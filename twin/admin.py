"""Admin for operators and stewards: list, search and edit grids and assets; saves are judged by the shapes."""

from django.contrib import admin

from twin import models


@admin.register(models.Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ["name", "iri"]
    search_fields = ["name", "iri"]
    filter_horizontal = ["members", "stewards"]


@admin.register(models.Grid)
class GridAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "source", "version", "updated_at"]
    list_filter = ["owner"]
    search_fields = ["name", "iri"]
    readonly_fields = ["version", "created_at", "updated_at"]


class GridPartAdmin(admin.ModelAdmin):
    """Common list and search settings; foreign keys to buses are raw ids (grids have thousands)."""

    search_fields = ["name", "iri"]
    list_filter = ["grid"]
    list_per_page = 50

    def get_list_display(self, request):
        fields = [f.name for f in self.model._meta.concrete_fields if f.name not in ("id", "part_iris", "grid")]
        return ["name", "grid", *[f for f in fields if f not in ("name", "iri")][:6]]

    def get_raw_id_fields(self, request):
        return [f.name for f in self.model._meta.concrete_fields if f.is_relation and f.name not in ("grid", "owner")]


for model in [models.Feeder, models.BaseVoltage, models.Bus, *models.ASSET_MODELS]:
    admin.site.register(model, GridPartAdmin)

from twin.loadflow import admin as loadflow_admin  # noqa: E402, F401  (load-flow runs, violations, hosting capacity)


@admin.register(models.Credential)
class CredentialAdmin(admin.ModelAdmin):
    """Tokens and gateway keys: issued by commands (the secret is shown once), revoked here."""

    list_display = ["prefix", "kind", "participant", "user", "name", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["kind", "participant"]
    readonly_fields = ["kind", "participant", "user", "prefix", "created_at", "last_used_at"]
    search_fields = ["prefix", "name"]

    def has_add_permission(self, request):
        return False
