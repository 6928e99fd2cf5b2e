"""Admin for data stewards: agreements with their lifecycle, API clients, and the audit (read-only)."""

from django.contrib import admin

from sharing.models import Agreement, ApiClient, AuditEntry


@admin.register(Agreement)
class AgreementAdmin(admin.ModelAdmin):
    list_display = ["uid", "provider", "consumer", "purpose", "status", "version", "valid_from", "valid_until"]
    list_filter = ["status", "purpose"]
    search_fields = ["uid", "provider__name", "consumer__name"]


@admin.register(ApiClient)
class ApiClientAdmin(admin.ModelAdmin):
    list_display = ["application", "participant", "scopes", "created_at", "expires_at", "revoked_at"]


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "participant_iri", "action", "resource", "purpose", "allowed", "rule", "records", "status_code"]
    list_filter = ["allowed", "action", "resource"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
