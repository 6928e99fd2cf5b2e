"""Serializers of the telemetry API: declarations only."""

from rest_framework import serializers
from rest_framework.reverse import reverse

from ingest.selectors import RESOLUTION_SECONDS
from twin import models
from twin.api.serializers import IdField, QuerySerializer, ZonedDateTimeField
from twin.models import QUANTITIES


class BatchSerializer(serializers.ModelSerializer):
    source = serializers.CharField(source="source.name")
    counts = serializers.SerializerMethodField()
    rejected_url = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = models.TelemetryBatch
        fields = ["id", "url", "status", "source", "channel", "content_type", "idempotency_key", "attempts", "received_at",
                  "started_at", "finished_at", "counts", "rejected_url", "error"]

    def get_counts(self, batch) -> dict[str, int]:
        return {"received": batch.received_count, "accepted": batch.accepted_count, "duplicate": batch.duplicate_count,
                "rejected": batch.rejected_count}

    def get_url(self, batch) -> str:
        return reverse("telemetry-batch-detail", args=[batch.pk], request=self.context.get("request"))

    def get_rejected_url(self, batch) -> str:
        return reverse("telemetry-batch-rejected", args=[batch.pk], request=self.context.get("request"))


class RejectedReadingSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.RejectedReading
        fields = ["position", "reason", "message", "reading"]


class ReadingsQuerySerializer(QuerySerializer):
    """Query parameters of GET /telemetry/readings."""

    point = serializers.ListField(child=serializers.CharField(), required=False, default=list,
                                  help_text="Meter id or IRI; repeat for several points.")
    feeder = IdField(required=False, help_text="All points of a feeder (instead of point).")
    quantity = serializers.ChoiceField(choices=sorted(QUANTITIES))
    start = ZonedDateTimeField(help_text="From this time (ISO 8601 with zone).")
    end = ZonedDateTimeField(help_text="Before this time (ISO 8601 with zone).")
    resolution = serializers.ChoiceField(choices=["raw", *RESOLUTION_SECONDS], default="raw")
    group = serializers.ChoiceField(choices=["point", "all"], default="point",
                                    help_text="`all`: one series aggregated over all the points (not with raw).")

    def validate(self, attrs):
        if bool(attrs["point"]) == ("feeder" in attrs):
            raise serializers.ValidationError("give either point (one or more) or feeder")
        if attrs["end"] <= attrs["start"]:
            raise serializers.ValidationError("end must be after start")
        if attrs["group"] == "all" and attrs["resolution"] == "raw":
            raise serializers.ValidationError("group=all needs an aggregate resolution (15min, hour, day)")
        return attrs


class LatestQuerySerializer(QuerySerializer):
    """Query parameters of GET /telemetry/latest."""

    feeder = IdField(required=False)
    grid = IdField(required=False)
    quantity = serializers.ChoiceField(choices=sorted(QUANTITIES), required=False)

    def validate(self, attrs):
        if ("feeder" in attrs) == ("grid" in attrs):
            raise serializers.ValidationError("give either feeder or grid")
        return attrs
