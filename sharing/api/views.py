"""The hub's own API: agreements (JSON, or ODRL as JSON-LD / Turtle) and their lifecycle, decisions explained, the audit.

Views declare; `sharing.services` writes and `sharing.decisions` decides (through PolicyViewSet).
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from sharing import decisions, odrl, services
from sharing.api.base import PolicyViewSet
from sharing.api.rows import negotiated_format
from sharing.models import Agreement, AuditEntry
from sharing.scope import MODEL_OF_TYPE
from twin.api.serializers import BodyModelSerializer, BodySerializer
from twin.api.views import JsonBodyParser, RdfNegotiationMixin, RdfUploadParser, json_body
from twin.models import OwnerConsent, Participant

ODRL_MEDIA_TYPES = {"application/ld+json": "json-ld", "text/turtle": "turtle"}
ASSET_RESOURCES = ("asset", "shared.asset")


class AgreementSerializer(BodyModelSerializer):
    """An agreement's terms as JSON; who provides it, its state and its history are not writable (the lifecycle sets them)."""

    provider = serializers.SlugRelatedField(slug_field="iri", read_only=True)
    consumer = serializers.CharField(max_length=500, help_text="IRI of the consuming participant.")
    previous = serializers.SlugRelatedField(slug_field="uid", read_only=True, allow_null=True)

    def validate_consumer(self, iri: str) -> Participant:
        """The consumer by IRI (a text field, so no form ever lists the hub's participants)."""
        found = Participant.objects.filter(iri=iri).first()
        if found is None:
            raise serializers.ValidationError("no such participant")
        return found

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["consumer"] = instance.consumer.iri
        return data

    class Meta:
        model = Agreement
        fields = ["id", "uid", "version", "previous", "status", *[t for t in Agreement.TERMS if t != "provider"], "provider",
                  "created_at", "offered_at", "activated_at", "ended_at", "end_reason"]
        read_only_fields = ["id", "version", "previous", "status", "provider", "created_at", "offered_at", "activated_at", "ended_at",
                            "end_reason"]
        extra_kwargs = {"uid": {"required": False}}


ODRL_REFUSED = OpenApiResponse(description="terms outside the gridtwin ODRL profile (reason odrl_violation …, with the node)")
TRANSITION_RESPONSES = {200: AgreementSerializer, 409: OpenApiResponse(description="the agreement's state does not allow this step")}


class TransitionSerializer(BodySerializer):
    reason = serializers.CharField(required=False, default="", max_length=500)


class AgreementViewSet(RdfNegotiationMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, PolicyViewSet):
    """Agreements you provide or consume. Stewards of the provider create drafts (JSON or ODRL), offer, activate, suspend,
    revoke and amend them. `Accept: application/ld+json` or `text/turtle` gives an agreement as its ODRL policy."""

    resource = "agreement"
    serializer_class = AgreementSerializer
    parser_classes = [RdfUploadParser]
    policy_actions = {"offer": "change", "activate": "change", "suspend": "change", "revoke": "change", "amend": "change"}
    filterset_fields = {"status": ["exact"]}  # not `purpose`: that parameter is the purpose a request declares

    def get_queryset(self):
        return super().get_queryset().select_related("provider", "consumer", "previous").order_by("-id")

    @extend_schema(responses={(200, "application/json"): AgreementSerializer, (200, "application/ld+json"): OpenApiTypes.ANY,
                              (200, "text/turtle"): OpenApiTypes.STR})
    def retrieve(self, request, *args, **kwargs):
        agreement = self.get_object()
        chosen = negotiated_format(request.META.get("HTTP_ACCEPT", ""))
        if chosen in ("json-ld", "turtle"):
            media_type = next(m for m, f in ODRL_MEDIA_TYPES.items() if f == chosen)
            return HttpResponse(odrl.serialize_agreement(agreement, chosen), content_type=f"{media_type}; charset=utf-8")
        return Response(self.get_serializer(agreement).data)

    @extend_schema(request={"application/json": AgreementSerializer, "application/ld+json": OpenApiTypes.BINARY,
                            "text/turtle": OpenApiTypes.BINARY},
                   responses={201: AgreementSerializer, 400: OpenApiResponse(description="invalid terms or ODRL policy"),
                              422: ODRL_REFUSED})
    def create(self, request):
        """A draft agreement of your participant (you must be its steward): JSON terms, or an ODRL policy as JSON-LD / Turtle."""
        terms = self._terms(request)
        agreement = services.agreement_create(provider=self.principal.participant, user=self.principal.user,
                                              credential=self.principal.credential_label, **terms)
        return Response(self.get_serializer(agreement).data, status=status.HTTP_201_CREATED)

    def _terms(self, request) -> dict:
        body = request.data if isinstance(request.data, bytes) else b""
        media_type = (request.content_type or "").split(";")[0].strip().lower()
        if media_type in ODRL_MEDIA_TYPES:
            terms = odrl.graph_to_agreement_fields(odrl.parse_agreement(body, media_type))
            if terms.get("provider") != self.principal.participant:
                raise ValidationError({"reason": "provider_mismatch", "message": "odrl:assigner must be your participant"})
            return {k: v for k, v in terms.items() if (k in Agreement.TERMS and k != "provider") or k == "uid"}
        serializer = self.get_serializer(data=_json(body))
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def _transition(self, request, step: str):
        body = TransitionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        agreement = services.agreement_transition(agreement=self.get_object(), step=step, actor=self.principal.participant,
                                                  user=self.principal.user, reason=body.validated_data["reason"],
                                                  credential=self.principal.credential_label)
        return Response(self.get_serializer(agreement).data)

    @extend_schema(request={"application/json": TransitionSerializer}, responses=TRANSITION_RESPONSES)
    @action(detail=True, methods=["post"], parser_classes=[JsonBodyParser])
    def offer(self, request, pk=None):
        """Offer the draft to the consumer (its terms are frozen from now on)."""
        return self._transition(request, "offer")

    @extend_schema(request={"application/json": TransitionSerializer}, responses=TRANSITION_RESPONSES)
    @action(detail=True, methods=["post"], parser_classes=[JsonBodyParser])
    def activate(self, request, pk=None):
        """Put the agreement in force (a steward of the provider only); an amendment replaces the version before it."""
        return self._transition(request, "activate")

    @extend_schema(request={"application/json": TransitionSerializer}, responses=TRANSITION_RESPONSES)
    @action(detail=True, methods=["post"], parser_classes=[JsonBodyParser])
    def suspend(self, request, pk=None):
        """Take the agreement out of force until it is activated again."""
        return self._transition(request, "suspend")

    @extend_schema(request={"application/json": TransitionSerializer}, responses=TRANSITION_RESPONSES)
    @action(detail=True, methods=["post"], parser_classes=[JsonBodyParser])
    def revoke(self, request, pk=None):
        """End the agreement for good, from the next request on."""
        return self._transition(request, "revoke")

    @extend_schema(request={"application/json": AgreementSerializer(partial=True)},
                   responses={201: AgreementSerializer, 409: OpenApiResponse(description="this version already has an amendment"),
                              422: ODRL_REFUSED})
    @action(detail=True, methods=["post"], parser_classes=[JsonBodyParser])
    def amend(self, request, pk=None):
        """A new draft version with the changed terms given (the rest copied); activating it replaces this one."""
        serializer = self.get_serializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = {k: v for k, v in serializer.validated_data.items() if k in Agreement.TERMS}
        agreement = services.agreement_amend(agreement=self.get_object(), actor=self.principal.participant, user=self.principal.user,
                                             credential=self.principal.credential_label, **changes)
        return Response(self.get_serializer(agreement).data, status=status.HTTP_201_CREATED)


def _json(body: bytes) -> dict:
    """A JSON body of this RDF-or-JSON view, by the API's one rule for JSON bodies (`twin.api.views.json_body`)."""
    found = json_body(body) if body else {}
    if not isinstance(found, dict):
        raise ValidationError({"reason": "invalid_json", "message": "the body must be a JSON object"})
    return found


class DecisionRequestSerializer(BodySerializer):
    action = serializers.ChoiceField(choices=[decisions.VIEW, decisions.ADD, decisions.CHANGE], default=decisions.VIEW)
    resource = serializers.ChoiceField(choices=decisions.RESOURCES)
    asset_type = serializers.ChoiceField(choices=sorted(MODEL_OF_TYPE), required=False)
    purpose = serializers.CharField(required=False, allow_blank=True, max_length=40)
    agreement = serializers.CharField(required=False, allow_blank=True, max_length=500)

    def validate(self, attrs):
        """`asset_type` names the kind of asset of the asset resources, which are decided per kind, and only theirs."""
        if (attrs["resource"] in ASSET_RESOURCES) != ("asset_type" in attrs):
            raise serializers.ValidationError({"asset_type": [f"required with {' and '.join(ASSET_RESOURCES)}, and only with them"]})
        return attrs


class DecisionViewSet(PolicyViewSet):
    """Explain a decision: would this request be allowed for you, by which policy and agreement, with which obligations."""

    resource = "decision"
    serializer_class = DecisionRequestSerializer
    parser_classes = [JsonBodyParser]

    @extend_schema(request=DecisionRequestSerializer, responses={200: OpenApiTypes.OBJECT})
    def create(self, request):
        body = DecisionRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        model = MODEL_OF_TYPE.get(data.get("asset_type", ""))
        decision = decisions.decide(self.principal, data["action"], data["resource"], purpose=data.get("purpose") or None, model=model,
                                    agreement=data.get("agreement") or None)
        self.records_out = 0
        return Response({**decision.explain(), "status": decision.status if not decision.allowed else 200})


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = ["id", "at", "participant_iri", "credential", "action", "resource", "purpose", "allowed", "rule", "agreement_uid",
                  "method", "path", "query", "status_code", "records", "preview", "previous_hash", "entry_hash"]


class AuditViewSet(mixins.ListModelMixin, PolicyViewSet):
    """Who read your data, under which agreement and rule, for which purpose, how many records (newest first)."""

    resource = "audit"
    serializer_class = AuditEntrySerializer
    filterset_fields = {"participant_iri": ["exact"], "agreement_uid": ["exact"], "allowed": ["exact"],
                        "at": ["gte", "lt"]}

    def get_queryset(self):
        return super().get_queryset().order_by("-id")


class OwnerConsentSerializer(BodyModelSerializer):
    class Meta:
        model = OwnerConsent
        fields = ["id", "grid_iri", "created_at"]


class OwnerConsentViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, PolicyViewSet):
    """Your consent to be named owner (`gt:owner`) of assets in another participant's grid, by that grid's IRI."""

    resource = "owner_consent"
    serializer_class = OwnerConsentSerializer
    parser_classes = [JsonBodyParser]

    def get_queryset(self):
        return super().get_queryset().order_by("-id")

    def perform_create(self, serializer):
        OwnerConsent.objects.get_or_create(owner=self.principal.participant, grid_iri=serializer.validated_data["grid_iri"])
        serializer.instance = OwnerConsent.objects.get(owner=self.principal.participant, grid_iri=serializer.validated_data["grid_iri"])
