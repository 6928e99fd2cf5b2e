"""Who a request acts for: one explicit principal per request (participant, credential, roles).

Authentication (`sharing.authentication`) establishes the credential; `principal_of` turns it into the
principal the decision point judges. A principal acts for exactly one participant or for none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twin import models as twin

OPERATOR, STEWARD, CONSUMER, GATEWAY = "operator", "steward", "consumer", "gateway"
PARTICIPANT_PARAMETER = "participant"


@dataclass(frozen=True)
class MachineUser:
    """`request.user` of a request made by a machine (gateway or OAuth2 client): authenticated, never staff."""

    label: str
    is_authenticated: bool = True
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False
    pk: None = None

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Principal:
    """The participant a request acts for, through which credential, with which roles.

    kind: anonymous | session | token | gateway | client. `roles` are operator (acts on what the participant
    owns), steward (manages its agreements), consumer (reads what agreements grant it) and gateway (sends
    telemetry). `source` is the gateway's telemetry source, `client` the OAuth2 API client.
    """

    kind: str
    participant: twin.Participant | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    credential_id: int | None = None
    user: object | None = None
    source: twin.TelemetrySource | None = None
    client: object | None = None
    ambiguous: bool = False  # a session user acting for several participants who named none

    @property
    def participant_id(self) -> int | None:
        return self.participant.pk if self.participant is not None else None

    @property
    def credential_label(self) -> str:
        return f"{self.kind}:{self.credential_id}" if self.credential_id is not None else self.kind

    def has(self, role: str) -> bool:
        return self.participant is not None and role in self.roles


ANONYMOUS = Principal(kind="anonymous")


def _user_roles(user, participant: twin.Participant) -> frozenset[str]:
    if not participant.members.filter(pk=user.pk).exists():
        return frozenset()
    roles = {OPERATOR, CONSUMER}
    if participant.stewards.filter(pk=user.pk).exists():
        roles.add(STEWARD)
    return frozenset(roles)


def _session_participant(request, user) -> tuple[twin.Participant | None, bool]:
    """A session user acts for its only participant, or the one it names with `?participant=IRI`; (participant, ambiguous)."""
    participants = twin.Participant.objects.filter(members=user)
    wanted = request.query_params.get(PARTICIPANT_PARAMETER) if hasattr(request, "query_params") else None
    if wanted:
        participants = participants.filter(iri=wanted)
    found = list(participants[:2])
    return (found[0] if len(found) == 1 else None), len(found) > 1


def principal_of(request) -> Principal:
    """The principal of an authenticated (or anonymous) DRF request; computed once and kept on the request."""
    cached = getattr(request, "_gridtwin_principal", None)
    if cached is not None:
        return cached
    principal = _build(request)
    request._gridtwin_principal = principal
    return principal


def _build(request) -> Principal:
    auth, user = request.auth, request.user
    if isinstance(auth, twin.Credential):
        if auth.kind == twin.Credential.Kind.GATEWAY:
            source = twin.TelemetrySource.objects.filter(credential=auth).first()
            return Principal(kind="gateway", participant=auth.participant, roles=frozenset({GATEWAY}), credential_id=auth.pk, source=source)
        return Principal(kind="token", participant=auth.participant, roles=_user_roles(auth.user, auth.participant),
                         credential_id=auth.pk, user=auth.user)
    client = getattr(auth, "gridtwin_client", None)
    if client is not None:
        scopes = set(getattr(auth, "scope", "").split()) & client.scope_set
        roles = ({CONSUMER} if "shared:read" in scopes else set()) | ({OPERATOR} if "operator" in scopes else set())
        return Principal(kind="client", participant=client.participant, roles=frozenset(roles), credential_id=client.pk, client=client)
    if user is not None and getattr(user, "is_authenticated", False) and hasattr(user, "participants"):
        participant, ambiguous = _session_participant(request, user)
        roles = _user_roles(user, participant) if participant is not None else frozenset()
        return Principal(kind="session", participant=participant, roles=roles, user=user, credential_id=None, ambiguous=ambiguous)
    return ANONYMOUS
