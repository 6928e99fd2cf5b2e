"""Offers and access requests over the API: a provider's steward publishes offers; a consumer asks for datasets of its
catalog and follows, accepts, declines or withdraws; a steward of the provider approves, rejects or counter-offers (also in
the admin's inbox).

Views declare; `sharing.access_requests` writes and audits; `sharing.decisions` decides (through PolicyViewSet):
someone else's request is 404, reviewing needs the provider's steward (403 for a non-steward member).
"""

from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from sharing import access_requests as workflow
from sharing import decisions
from sharing.api.base import PolicyViewSet
from sharing.audit import audit_record
from sharing.datasets import offer_datasets
from sharing.models import DROPPABLE_FIELDS, AccessRequest, DataCategory, DatasetOffer, GroupBy, Resolution
from twin.api.serializers import BodyModelSerializer, BodySerializer, IriField, ZonedDateTimeField
from twin.api.views import JsonBodyParser


class AccessRequestSerializer(BodyModelSerializer):
    """A request as its consumer and the provider's steward see it; only the asks are writable."""

    consumer = serializers.SlugRelatedField(slug_field="iri", read_only=True)
    provider = serializers.SlugRelatedField(slug_field="iri", read_only=True)
    offer = serializers.CharField(required=False, max_length=500, help_text="uid of the offer (default: the one holding the datasets).")
    datasets = serializers.ListField(child=serializers.CharField(max_length=100), min_length=1, max_length=workflow.MAX_DATASETS,
                                     help_text="Dataset ids from GET /api/v1/shared/catalog.")
    valid_from = ZonedDateTimeField(required=False, help_text="Default: now.")
    agreement = serializers.SerializerMethodField()

    class Meta:
        model = AccessRequest
        fields = ["id", "status", "consumer", "provider", "offer", "datasets", "purpose", "valid_from", "valid_until", "resolution",
                  "message", "counter_terms", "reason", "agreement", "created_at", "decided_at", "answered_at"]
        read_only_fields = ["id", "status", "consumer", "provider", "counter_terms", "reason", "agreement", "created_at", "decided_at",
                            "answered_at"]

    def get_agreement(self, req: AccessRequest) -> dict | None:
        """The agreement the approval or counter-offer created: its id (for ?agreement=), uid and state."""
        agreement = req.agreement
        return {"id": agreement.pk, "uid": agreement.uid, "status": agreement.status} if agreement is not None else None

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["offer"] = instance.offer.uid
        return data


class ReviewSerializer(BodySerializer):
    """Body of approve: in force at once, or as an offer the consumer accepts."""

    activate = serializers.BooleanField(default=True)


class ReasonSerializer(BodySerializer):
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class CounterOfferSerializer(BodySerializer):
    """The terms a counter-offer changes (any of these) and why."""

    reason = serializers.CharField(max_length=500, required=False, default="")
    valid_from = ZonedDateTimeField(required=False)
    valid_until = ZonedDateTimeField(required=False)
    resolution = serializers.ChoiceField(choices=Resolution.choices, required=False)
    categories = serializers.ListField(child=serializers.ChoiceField(choices=DataCategory.values), required=False, min_length=1)
    feeder_iris = serializers.ListField(child=serializers.CharField(max_length=500), required=False, max_length=workflow.MAX_DATASETS)
    group_by = serializers.ChoiceField(choices=GroupBy.choices, required=False)
    min_group_size = serializers.IntegerField(min_value=1, max_value=10_000, required=False)
    dropped_fields = serializers.ListField(child=serializers.ChoiceField(choices=list(DROPPABLE_FIELDS)), required=False)
    data_start = ZonedDateTimeField(required=False, allow_null=True)
    data_end = ZonedDateTimeField(required=False, allow_null=True)
    delete_after_days = serializers.IntegerField(min_value=1, max_value=36_500, required=False, allow_null=True)
    attribution = serializers.CharField(max_length=500, required=False, allow_blank=True)


class AccessRequestViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, PolicyViewSet):
    """Your requests for datasets (as consumer) and the requests made to your participant (as its steward).

    POST a request naming datasets of your catalog, a purpose, a period and a resolution; follow its `status`;
    accept or decline an offer the steward made (`offered`, `countered`); withdraw it while not in force.
    """

    resource = "request"
    serializer_class = AccessRequestSerializer
    parser_classes = [JsonBodyParser]
    lookup_value_regex = r"\d+"
    policy_actions = {"approve": decisions.REVIEW, "reject": decisions.REVIEW, "counter": decisions.REVIEW,
                      "accept": decisions.ANSWER, "decline": decisions.ANSWER, "withdraw": decisions.ANSWER}
    filterset_fields = {"status": ["exact"]}

    def get_queryset(self):
        return super().get_queryset().select_related("consumer", "provider", "offer", "agreement").order_by("-id")

    @extend_schema(responses={201: AccessRequestSerializer, 404: OpenApiResponse(description="a dataset outside your catalog")})
    def create(self, request):
        """Ask for datasets of one offer in your catalog (GET /api/v1/shared/catalog?granted=false)."""
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        asks = body.validated_data
        offer = None
        if asks.get("offer"):
            offer = DatasetOffer.objects.filter(uid=asks["offer"]).first()
            if offer is None:
                raise workflow.RequestError("no_such_dataset", "no such offer in your catalog", status=404)
        req = workflow.request_create(consumer=self.principal.participant, datasets=asks["datasets"], purpose=asks["purpose"],
                                      valid_from=asks.get("valid_from") or timezone.now(), valid_until=asks["valid_until"],
                                      resolution=asks.get("resolution", Resolution.HOUR), message=asks.get("message", ""), offer=offer,
                                      user=self.principal.user, credential=self.principal.credential_label)
        return Response(self.get_serializer(req).data, status=status.HTTP_201_CREATED)

    def _step(self, request, body_class, step, **fixed):
        body = body_class(data=request.data)
        body.is_valid(raise_exception=True)
        args = dict(body.validated_data)
        if body_class is CounterOfferSerializer:
            args = {"reason": args.pop("reason"), "changes": args}
        req = step(req=self.get_object(), actor=self.principal.participant, credential=self.principal.credential_label, **fixed, **args)
        return Response(self.get_serializer(req).data)

    @extend_schema(request=ReviewSerializer, responses={200: AccessRequestSerializer})
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        """Steward of the provider: grant the request as asked, in force now (`activate`, default) or as an offer."""
        return self._step(request, ReviewSerializer, workflow.request_approve, user=self.principal.user)

    @extend_schema(request=ReasonSerializer, responses={200: AccessRequestSerializer})
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        """Steward of the provider: refuse the request, with a reason."""
        return self._step(request, ReasonSerializer, workflow.request_reject, user=self.principal.user)

    @extend_schema(request=CounterOfferSerializer, responses={200: AccessRequestSerializer})
    @action(detail=True, methods=["post"])
    def counter(self, request, pk=None):
        """Steward of the provider: offer changed terms, which the consumer accepts or declines."""
        return self._step(request, CounterOfferSerializer, workflow.request_counter, user=self.principal.user)

    @extend_schema(request=None, responses={200: AccessRequestSerializer})
    @action(detail=True, methods=["post"])
    def accept(self, request, pk=None):
        """Consumer: accept the steward's offer; the agreement goes in force."""
        return self._step(request, serializers.Serializer, workflow.request_accept)

    @extend_schema(request=ReasonSerializer, responses={200: AccessRequestSerializer})
    @action(detail=True, methods=["post"])
    def decline(self, request, pk=None):
        """Consumer: decline the steward's offer."""
        return self._step(request, ReasonSerializer, workflow.request_decline)

    @extend_schema(request=None, responses={200: AccessRequestSerializer})
    @action(detail=True, methods=["post"])
    def withdraw(self, request, pk=None):
        """Consumer: withdraw the request (an offer not yet accepted is revoked)."""
        return self._step(request, serializers.Serializer, workflow.request_withdraw)



class OfferSerializer(BodyModelSerializer):
    """An offer of the provider's datasets; the provider is the steward's participant (not writable)."""

    provider = serializers.SlugRelatedField(slug_field="iri", read_only=True)
    grid = serializers.CharField(max_length=500, help_text="IRI of one of your grids.")
    uid = serializers.CharField(max_length=500, required=False, help_text="The offer's IRI (default: a new urn:uuid).")
    feeder_iris = serializers.ListField(child=IriField(), required=False, max_length=workflow.MAX_DATASETS,
                                        help_text="Feeders offered (IRIs), one dataset each; empty: the grid.")
    datasets = serializers.SerializerMethodField(help_text="The dataset ids it offers (one per category and feeder, or grid).")

    class Meta:
        model = DatasetOffer
        fields = ["id", "uid", "provider", "title", "description", "grid", "feeder_iris", "categories", "purposes", "resolution",
                  "group_by", "min_group_size", "dropped_fields", "prohibitions", "attribution", "delete_after_days", "max_days",
                  "audience", "published", "datasets", "created_at"]
        read_only_fields = ["id", "provider", "datasets", "created_at"]

    def validate_grid(self, iri: str):
        """One of the steward's own grids, by IRI; any other IRI is "no such grid" (nothing said of others' grids)."""
        grid = self.context["view"].principal.participant.grids.filter(iri=iri).first()
        if grid is None:
            raise serializers.ValidationError("no such grid")
        return grid

    def validate(self, attrs):
        """An offer's grid is fixed once created: requests name its datasets by grid (publish a new offer instead)."""
        if self.instance is not None and "grid" in attrs and attrs["grid"] != self.instance.grid:
            raise serializers.ValidationError({"grid": "the grid of an offer is fixed: publish a new offer for another grid"})
        return attrs

    def get_datasets(self, offer: DatasetOffer) -> list[str]:
        return [key.id for key in offer_datasets(offer)]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["grid"] = instance.grid.iri
        return data


class OfferViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, PolicyViewSet):
    """Your participant's offers: what consumers find in the catalog and may request. Stewards create, change and
    (un)publish them; consumers see published offers addressed to their roles in GET /api/v1/shared/catalog."""

    resource = "offer"
    serializer_class = OfferSerializer
    parser_classes = [JsonBodyParser]
    lookup_value_regex = r"\d+"
    filterset_fields = {"published": ["exact"]}

    def get_queryset(self):
        return super().get_queryset().select_related("provider", "grid").order_by("-id")

    @extend_schema(responses={201: OfferSerializer})
    def create(self, request):
        """A new offer of one of your grids (published when `published` is true)."""
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        offer = DatasetOffer(provider=self.principal.participant, **body.validated_data)
        offer.uid = offer.uid or f"urn:uuid:{uuid.uuid4()}"
        return Response(self.get_serializer(self._save(offer, "create")).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: OfferSerializer})
    def partial_update(self, request, pk=None):
        """Change an offer (e.g. `{"published": false}` to withdraw it from the catalog); requests already made keep its uid."""
        offer = self.get_object()
        body = self.get_serializer(offer, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        for name, value in body.validated_data.items():
            setattr(offer, name, value)
        return Response(self.get_serializer(self._save(offer, "change")).data)

    @transaction.atomic
    def _save(self, offer: DatasetOffer, step: str) -> DatasetOffer:
        offer.full_clean()
        offer.save()
        participant = self.principal.participant
        audit_record(participant_iri=participant.iri, credential=self.principal.credential_label, action=f"offer.{step}", resource="offer",
                     purpose="", allowed=True, rule="steward", agreement_uid=offer.uid, provider_iri=participant.iri, method="", path="",
                     query={"published": str(offer.published)}, status_code=None, records=1)
        return offer
