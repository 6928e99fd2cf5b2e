"""Serializers of the operator API: declarations only."""

from rest_framework import serializers

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
