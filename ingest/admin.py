"""Admin for stewards: telemetry sources (keys are issued by `issue_telemetry_key`), batches and their rejections."""

from django.contrib import admin

from twin import models


@admin.register(models.TelemetrySource)
class TelemetrySourceAdmin(admin.ModelAdmin):
    list_display = ["name", "participant", "credential", "created_at"]
    list_filter = ["participant"]
    search_fields = ["name", "credential__prefix"]
    readonly_fields = ["credential", "created_at"]


@admin.register(models.TelemetryBatch)
class TelemetryBatchAdmin(admin.ModelAdmin):
    list_display = ["id", "source", "channel", "status", "attempts", "received_count", "accepted_count", "duplicate_count",
                    "rejected_count", "received_at"]
    list_filter = ["status", "channel"]
    exclude = ["body"]
    readonly_fields = [f.name for f in models.TelemetryBatch._meta.fields if f.name != "body"]
