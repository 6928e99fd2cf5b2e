"""The stewards' admin: each steward sees and changes only its participants' agreements, clients, audit and credentials.

Personas: the steward of the provider A, the steward of the consumer B, the steward of another provider C, a
superuser who stewards nothing, and a staff user who stewards nothing. Agreements: A → B and C → D.
"""

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from sharing import services
from sharing.admin import TERM_FIELDSETS, agreement_summary
from sharing.models import Agreement, ApiClient, AuditEntry
from sharing.oauth import api_client_issue
from tests.hub import PURPOSE, agreement_in_state, agreement_terms, participant_create, staff_user
from twin.models import Credential, Participant

pytestmark = pytest.mark.django_db

FEEDER = "https://gridtwin.example/id/grid/lv/feeder/0"
AGREEMENTS = reverse("admin:sharing_agreement_changelist")
CLIENTS = reverse("admin:sharing_apiclient_changelist")
AUDIT = reverse("admin:sharing_auditentry_changelist")
SECRET = re.compile(r"client secret: (\S+)")


@dataclass
class Hub:
    participants: dict[str, Participant]
    agreements: dict[str, Agreement]
    browsers: dict[str, Client] = field(default_factory=dict)
    users: dict[str, object] = field(default_factory=dict)


@pytest.fixture
def hub() -> Hub:
    a, b = participant_create("Stadtwerke Nord", ["dso"]), participant_create("Flex Aggregator", ["aggregator"])
    c, d = participant_create("Stadtwerke Sued", ["dso"]), participant_create("Other Aggregator", ["aggregator"])
    agreements = {"ab": services.agreement_create(provider=a, **agreement_terms(a, b, feeder_iris=[FEEDER])),
                  "cd": services.agreement_create(provider=c, **agreement_terms(c, d))}
    world = Hub(participants={"a": a, "b": b, "c": c, "d": d}, agreements=agreements)
    world.users = {"steward_a": staff_user("steward-a", stewards=[a]), "steward_b": staff_user("steward-b", stewards=[b]),
                   "steward_c": staff_user("steward-c", stewards=[c]), "superuser": staff_user("root", superuser=True),
                   "nobody": staff_user("nobody")}
    for name, user in world.users.items():
        world.browsers[name] = Client()
        world.browsers[name].force_login(user)
    return world


def change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def shown(response) -> list:
    """The objects a changelist shows."""
    return list(response.context["cl"].result_list)


def messages_of(response) -> list[str]:
    return [m.message for m in get_messages(response.wsgi_request)]


def agreement_form(provider: Participant, consumer: Participant, **changes) -> dict:
    """The agreement add/change form as a browser posts it."""
    now = timezone.now()
    data = {"provider": provider.pk, "consumer": consumer.pk, "purpose": PURPOSE,
            "valid_from_0": f"{now - timedelta(days=1):%Y-%m-%d}", "valid_from_1": "00:00:00",
            "valid_until_0": f"{now + timedelta(days=90):%Y-%m-%d}", "valid_until_1": "00:00:00",
            "categories": ["telemetry", "topology"], "grid_iris": "", "feeder_iris": FEEDER, "asset_iris": "",
            "resolution": "hour", "group_by": "feeder", "min_group_size": "5", "dropped_fields": ["owner", "coordinates"],
            "data_start_0": "", "data_start_1": "", "data_end_0": "", "data_end_1": "", "prohibitions": ["sell"],
            "attribution": "", "delete_after_days": ""}
    return data | changes


def act(browser: Client, changelist: str, action: str, *objects):
    return browser.post(changelist, {"action": action, "_selected_action": [o.pk for o in objects]})


def token_request(client_id: str, secret: str, **extra):
    return Client().post("/o/token/", {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, **extra})


# --- agreements -------------------------------------------------------------------------------------


def test_a_steward_sees_its_participants_agreements_and_not_others(hub):
    ab, cd = hub.agreements["ab"], hub.agreements["cd"]

    assert shown(hub.browsers["steward_a"].get(AGREEMENTS)) == [ab]
    assert shown(hub.browsers["steward_c"].get(AGREEMENTS)) == [cd]
    assert set(shown(hub.browsers["superuser"].get(AGREEMENTS))) == {ab, cd}

    response = hub.browsers["steward_a"].get(change_url(cd))
    assert response.status_code == 302 and response.url == reverse("admin:index")  # as for an agreement that does not exist
    followed = hub.browsers["steward_a"].get(change_url(cd), follow=True)
    assert cd.uid not in followed.content.decode()
    assert any("doesn’t exist" in m for m in messages_of(followed))
    assert hub.browsers["steward_a"].post(change_url(cd), agreement_form(hub.participants["c"], hub.participants["d"])).status_code == 302
    cd.refresh_from_db()
    assert cd.feeder_iris == []


def test_the_consumers_steward_sees_the_agreement_read_only(hub):
    ab = hub.agreements["ab"]
    browser = hub.browsers["steward_b"]

    assert shown(browser.get(AGREEMENTS)) == [ab]
    response = browser.get(change_url(ab))
    assert response.status_code == 200
    assert 'name="purpose"' not in response.content.decode()
    assert browser.post(change_url(ab), agreement_form(hub.participants["a"], hub.participants["b"], purpose="research")).status_code == 403
    ab.refresh_from_db()
    assert ab.purpose == PURPOSE


def test_a_staff_user_who_stewards_nothing_sees_no_sharing_admin(hub):
    browser = hub.browsers["nobody"]

    assert browser.get(AGREEMENTS).status_code == 403
    assert browser.get(CLIENTS).status_code == 403
    assert browser.get(AUDIT).status_code == 403
    assert b"/admin/sharing/" not in browser.get(reverse("admin:index")).content
    assert b"/admin/sharing/" in hub.browsers["steward_a"].get(reverse("admin:index")).content


def test_the_provider_choices_are_the_stewards_participants_and_the_consumer_any(hub):
    form = hub.browsers["steward_a"].get(reverse("admin:sharing_agreement_add")).context["adminform"].form

    assert list(form.fields["provider"].queryset) == [hub.participants["a"]]
    assert set(form.fields["consumer"].queryset) == set(hub.participants.values())


def test_adding_an_agreement_creates_an_audited_draft_through_the_service(hub):
    a, b = hub.participants["a"], hub.participants["b"]

    response = hub.browsers["steward_a"].post(reverse("admin:sharing_agreement_add"), agreement_form(a, b))

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    created = Agreement.objects.exclude(pk__in=[x.pk for x in hub.agreements.values()]).get()
    assert (created.provider, created.consumer, created.status, created.version) == (a, b, "draft", 1)
    assert created.feeder_iris == [FEEDER] and created.categories == ["telemetry", "topology"] and created.prohibitions == ["sell"]
    assert created.created_by == hub.users["steward_a"]
    entry = AuditEntry.objects.get(agreement_uid=created.uid)
    assert (entry.action, entry.provider_iri, entry.credential) == ("agreement.create", a.iri, f"admin:{hub.users['steward_a'].pk}")


def test_a_steward_cannot_add_an_agreement_for_a_provider_it_does_not_steward(hub):
    c, d = hub.participants["c"], hub.participants["d"]

    response = hub.browsers["steward_a"].post(reverse("admin:sharing_agreement_add"), agreement_form(c, d))

    assert response.status_code == 200
    assert "provider" in response.context["adminform"].form.errors
    assert Agreement.objects.count() == 2


def test_editing_a_draft_is_validated_saved_and_audited(hub):
    ab, a, b = hub.agreements["ab"], hub.participants["a"], hub.participants["b"]
    browser = hub.browsers["steward_a"]

    refused = browser.post(change_url(ab), agreement_form(a, b, valid_until_0=f"{timezone.now() - timedelta(days=5):%Y-%m-%d}"))
    assert refused.status_code == 200 and "valid_until" in refused.context["adminform"].form.errors

    response = browser.post(change_url(ab), agreement_form(a, b, min_group_size="8"))

    assert response.status_code == 302
    ab.refresh_from_db()
    assert ab.min_group_size == 8 and ab.status == "draft"
    assert AuditEntry.objects.filter(agreement_uid=ab.uid, action="agreement.change").count() == 1


def test_the_providers_steward_offers_and_activates(hub):
    ab = hub.agreements["ab"]
    browser = hub.browsers["steward_a"]

    offered = act(browser, AGREEMENTS, "offer", ab)
    activated = act(browser, AGREEMENTS, "activate", ab)

    ab.refresh_from_db()
    assert ab.status == "active" and ab.activated_by == hub.users["steward_a"]
    assert any("offered" in m for m in messages_of(offered)) and any("activated" in m for m in messages_of(activated))
    assert list(AuditEntry.objects.filter(agreement_uid=ab.uid).values_list("action", flat=True).order_by("id")) == \
        ["agreement.create", "agreement.offer", "agreement.activate"]


@pytest.mark.parametrize("persona", ["steward_b", "superuser"])
def test_the_consumers_steward_or_a_superuser_who_is_not_the_providers_steward_cannot_activate(hub, persona):
    ab = hub.agreements["ab"]
    services.agreement_transition(agreement=ab, step="offer", actor=hub.participants["a"])

    response = act(hub.browsers[persona], AGREEMENTS, "activate", ab)

    ab.refresh_from_db()
    assert ab.status == "offered"
    assert any("only a steward of Stadtwerke Nord" in m for m in messages_of(response))


def test_a_superuser_who_is_the_providers_steward_can_activate(hub):
    ab = hub.agreements["ab"]
    hub.participants["a"].stewards.add(hub.users["superuser"])

    act(hub.browsers["superuser"], AGREEMENTS, "offer", ab)
    act(hub.browsers["superuser"], AGREEMENTS, "activate", ab)

    ab.refresh_from_db()
    assert ab.status == "active"


def test_an_invalid_step_is_reported_and_changes_nothing(hub):
    ab = hub.agreements["ab"]

    response = act(hub.browsers["steward_a"], AGREEMENTS, "suspend", ab)

    ab.refresh_from_db()
    assert ab.status == "draft"
    assert any("cannot suspend" in m for m in messages_of(response))


def test_an_active_agreements_terms_are_read_only(hub):
    a, b = hub.participants["a"], hub.participants["b"]
    active = agreement_in_state(a, b, "active", feeder_iris=[FEEDER])
    browser = hub.browsers["steward_a"]

    page = browser.get(change_url(active)).content.decode()

    for term in Agreement.TERMS:
        assert f'name="{term}"' not in page and f'name="{term}_0"' not in page
    assert agreement_summary(active) in page
    browser.post(change_url(active), agreement_form(a, b, purpose="research", min_group_size="2"))
    active.refresh_from_db()
    assert (active.purpose, active.min_group_size) == (PURPOSE, 5)
    assert not AuditEntry.objects.filter(agreement_uid=active.uid, action="agreement.change").exists()


def test_amending_makes_a_new_draft_version_and_opens_it(hub):
    active = agreement_in_state(hub.participants["a"], hub.participants["b"], "active", feeder_iris=[FEEDER])

    response = act(hub.browsers["steward_a"], AGREEMENTS, "amend", active)

    amendment = Agreement.objects.get(previous=active)
    assert response.status_code == 302 and response.url == change_url(amendment)
    assert (amendment.status, amendment.version, amendment.feeder_iris) == ("draft", 2, [FEEDER])
    active.refresh_from_db()
    assert active.status == "active"
    page = hub.browsers["steward_a"].get(change_url(amendment)).content.decode()
    assert 'name="purpose"' in page  # the new draft's terms are editable


def test_the_agreement_form_shows_every_term():
    shown_terms = {name for _, options in TERM_FIELDSETS for row in options["fields"] for name in ([row] if isinstance(row, str) else row)}

    assert shown_terms == set(Agreement.TERMS)


def test_the_summary_says_what_an_agreement_grants_in_one_line(hub):
    a, b = hub.participants["a"], hub.participants["b"]
    agreement = Agreement(provider=a, consumer=b, purpose=PURPOSE, categories=["telemetry", "topology"], feeder_iris=[FEEDER],
                          valid_from=datetime(2024, 1, 1, tzinfo=UTC), valid_until=datetime(2027, 3, 31, tzinfo=UTC), resolution="hour",
                          group_by="feeder", min_group_size=5, dropped_fields=["owner", "coordinates"])

    assert agreement_summary(agreement) == ("Flex Aggregator may read telemetry and topology of feeder …/feeder/0 hourly for flexibility "
                                            "procurement, aggregated per feeder over groups of at least 5 meters, until 2027-03-31; "
                                            "owner and coordinates removed")

    agreement.categories, agreement.feeder_iris, agreement.purpose, agreement.dropped_fields = ["topology"], [], "research", []
    agreement.asset_types, agreement.prohibitions, agreement.attribution = ["line", "ev_charger"], ["sell", "reidentify"], "© Nord"
    assert agreement_summary(agreement) == ("Flex Aggregator may read topology of the line and ev charger assets of every grid of "
                                            "Stadtwerke Nord for research and development, until 2027-03-31; may not sell or re-identify "
                                            "the data; attributed as “© Nord”")


# --- API clients -------------------------------------------------------------------------------------


def test_issuing_a_client_shows_its_secret_once_and_stores_only_a_hash(hub, caplog):
    browser = hub.browsers["steward_a"]
    form = {"name": "flex-bot", "participant": hub.participants["a"].pk, "scopes": ["shared:read"], "expires_at_0": "", "expires_at_1": ""}

    with caplog.at_level(logging.DEBUG):
        response = browser.post(reverse("admin:sharing_apiclient_add"), form)

    assert response.status_code == 200
    found = [SECRET.search(m) for m in messages_of(response)]
    secrets = [m.group(1) for m in found if m]
    assert len(secrets) == 1
    secret = secrets[0]
    assert response.content.decode().count(secret) == 1
    client = ApiClient.objects.get(participant=hub.participants["a"])
    assert client.application.client_id in response.content.decode()
    assert client.application.client_secret != secret and check_password(secret, client.application.client_secret)
    assert secret not in caplog.text
    assert "messages" not in response.cookies and secret not in str(dict(browser.session.items()))  # never parked for a redirect
    assert secret not in browser.get(CLIENTS).content.decode() and secret not in browser.get(change_url(client)).content.decode()
    assert token_request(client.application.client_id, secret).status_code == 200


def test_a_steward_issues_clients_only_for_its_participants_and_sees_only_theirs(hub):
    mine, _, _ = api_client_issue(participant=hub.participants["a"], name="mine")
    api_client_issue(participant=hub.participants["c"], name="theirs")
    browser = hub.browsers["steward_a"]

    response = browser.post(reverse("admin:sharing_apiclient_add"), {"name": "sneaky", "participant": hub.participants["c"].pk,
                                                                     "scopes": ["shared:read"]})

    assert response.status_code == 200 and "participant" in response.context["adminform"].form.errors
    assert not ApiClient.objects.filter(application__name="sneaky").exists()
    assert shown(browser.get(CLIENTS)) == [mine]


def test_rotating_shows_the_new_secret_once_and_the_old_one_stops_working(hub):
    client, client_id, old = api_client_issue(participant=hub.participants["a"], name="flex-bot")

    response = act(hub.browsers["steward_a"], CLIENTS, "rotate_secret", client)

    assert response.status_code == 200
    new = next(m.group(1) for m in map(SECRET.search, messages_of(response)) if m)
    assert new != old and response.content.decode().count(new) == 1
    assert token_request(client_id, old).status_code == 401
    assert token_request(client_id, new).status_code == 200


def test_revoking_a_client_makes_its_next_token_request_fail(hub):
    client, client_id, secret = api_client_issue(participant=hub.participants["a"], name="flex-bot")
    assert token_request(client_id, secret, scope="shared:read").status_code == 200

    act(hub.browsers["steward_a"], CLIENTS, "revoke", client)

    client.refresh_from_db()
    assert client.revoked_at is not None
    # a revoked client does not authenticate at the token endpoint at all, with or without a scope
    assert token_request(client_id, secret, scope="shared:read").status_code == 401
    assert token_request(client_id, secret).status_code == 401


def test_a_steward_cannot_rotate_or_revoke_another_participants_client(hub):
    theirs, client_id, secret = api_client_issue(participant=hub.participants["c"], name="theirs")

    act(hub.browsers["steward_a"], CLIENTS, "revoke", theirs)
    act(hub.browsers["steward_a"], CLIENTS, "rotate_secret", theirs)

    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert token_request(client_id, secret, scope="shared:read").status_code == 200


# --- audit -----------------------------------------------------------------------------------------


def test_a_steward_reads_the_audit_of_its_participants(hub):
    a = hub.participants["a"]

    entries = shown(hub.browsers["steward_a"].get(AUDIT))

    assert entries and all(a.iri in (e.provider_iri, e.participant_iri) for e in entries)
    assert len(shown(hub.browsers["superuser"].get(AUDIT))) == AuditEntry.objects.count() > len(entries)
    other = AuditEntry.objects.get(agreement_uid=hub.agreements["cd"].uid)
    assert hub.browsers["steward_a"].get(change_url(other)).status_code == 302


@pytest.mark.parametrize("persona", ["superuser", "steward_a"])
def test_the_audit_admin_refuses_add_change_and_delete(hub, persona):
    browser = hub.browsers[persona]
    entry = AuditEntry.objects.get(agreement_uid=hub.agreements["ab"].uid)

    assert browser.get(reverse("admin:sharing_auditentry_add")).status_code == 403
    assert browser.get(change_url(entry)).status_code == 200  # viewable
    assert browser.post(change_url(entry), {"action": "forged", "allowed": "on"}).status_code == 403
    assert browser.get(reverse("admin:sharing_auditentry_delete", args=[entry.pk])).status_code == 403
    assert browser.post(reverse("admin:sharing_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    assert act(browser, AUDIT, "delete_selected", entry).status_code in (200, 302)
    entry.refresh_from_db()
    assert entry.action == "agreement.create"


# --- participants and credentials ------------------------------------------------------------------


def test_a_steward_sees_and_edits_only_its_participants(hub):
    a, c = hub.participants["a"], hub.participants["c"]
    browser = hub.browsers["steward_a"]
    participants = reverse("admin:twin_participant_changelist")

    assert shown(browser.get(participants)) == [a]
    assert browser.get(change_url(c)).status_code == 302
    colleague = get_user_model().objects.create_user("colleague")
    a.members.add(colleague)  # a superuser made the account and attached it to the participant

    response = browser.post(change_url(a), {"name": "Stadtwerke Nord GmbH", "roles": ["dso"], "members": [hub.users["steward_a"].pk],
                                            "stewards": [hub.users["steward_a"].pk, colleague.pk], "iri": "https://evil.example/a"})

    assert response.status_code == 302
    a.refresh_from_db()
    assert a.name == "Stadtwerke Nord GmbH" and a.iri == "https://gridtwin.example/id/participant/stadtwerke-nord"
    assert set(a.stewards.all()) == set(a.members.all()) == {hub.users["steward_a"], colleague}
    assert browser.post(change_url(c), {"name": "taken over"}).status_code == 302
    c.refresh_from_db()
    assert c.name == "Stadtwerke Sued"


def test_a_steward_picks_members_only_among_its_own_participants_people(hub):
    a, c = hub.participants["a"], hub.participants["c"]
    browser = hub.browsers["steward_a"]
    stranger = get_user_model().objects.create_user("stranger-of-sued")
    c.members.add(stranger)

    page = browser.get(change_url(a))
    assert page.status_code == 200 and b"stranger-of-sued" not in page.content and b"steward-c" not in page.content
    response = browser.post(change_url(a), {"name": a.name, "roles": ["dso"], "members": [hub.users["steward_a"].pk, stranger.pk],
                                            "stewards": [hub.users["steward_a"].pk]})
    assert response.status_code == 200 and b"Select a valid choice" in response.content
    assert stranger not in a.members.all()


def test_a_steward_who_registers_a_participant_stewards_it(hub):
    browser = hub.browsers["steward_a"]

    response = browser.post(reverse("admin:twin_participant_add"), {"name": "Charge Co", "iri": "https://gridtwin.example/id/participant/cc",
                                                                    "roles": ["cpo"]})

    assert response.status_code == 302
    created = Participant.objects.get(name="Charge Co")
    assert created.roles == ["cpo"] and hub.users["steward_a"] in created.stewards.all()
    assert created in shown(browser.get(reverse("admin:twin_participant_changelist")))


def test_a_steward_revokes_its_participants_credentials_and_no_others(hub):
    a, c = hub.participants["a"], hub.participants["c"]
    mine, _ = Credential.issue(kind=Credential.Kind.GATEWAY, participant=a, name="gw-a")
    theirs, _ = Credential.issue(kind=Credential.Kind.GATEWAY, participant=c, name="gw-c")
    credentials = reverse("admin:twin_credential_changelist")
    browser = hub.browsers["steward_a"]

    assert shown(browser.get(credentials)) == [mine]
    act(browser, credentials, "revoke_credentials", mine, theirs)

    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.revoked_at is not None and theirs.revoked_at is None
    assert browser.get(change_url(theirs)).status_code == 302
