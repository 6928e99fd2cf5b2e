"""The steward's workbench in the admin: inbox of access requests, offers, access preview, version diff, audit export, scope picture.

Personas (staff users, Django test client): the steward of the provider Stadtwerke Nord (`steward_a`), the steward of
the consumer Flex Aggregator (`steward_b`), the steward of another provider Stadtwerke Sued (`steward_c`), a superuser
who stewards nothing, and a staff user who stewards nothing. Requests are made with the real service
(`sharing.access_requests.request_create`); what the preview promises is compared with real GET /api/v1/shared/… answers.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.core.serializers.json import DjangoJSONEncoder
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from ingest.testing import metered_grid_create
from sharing import services
from sharing.access_requests import COUNTERABLE_TERMS, request_accept, request_create, request_preview_agreement, request_terms
from sharing.admin import CounterOfferForm, agreement_summary
from sharing.api.urls import SHARED_ASSET_ROUTES
from sharing.datasets import DatasetKey
from sharing.models import AccessRequest, Agreement, AuditEntry, DataCategory, DatasetOffer
from sharing.preview import ASSET_LABELS, access_preview
from sharing.scope import MODEL_OF_TYPE
from tests.hub import PURPOSE, START, HubWorld, hub_world_create, offer_create, participant_create, staff_user
from twin import models as twin

pytestmark = pytest.mark.django_db

INBOX = reverse("admin:sharing_accessrequest_changelist")
OFFERS = reverse("admin:sharing_datasetoffer_changelist")
AUDIT = reverse("admin:sharing_auditentry_changelist")
SHARED_ROUTES = {type_name: route for route, type_name in SHARED_ASSET_ROUTES.items()}
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Bench:
    world: HubWorld
    offer: DatasetOffer
    request: AccessRequest
    other_request: AccessRequest
    participants: dict[str, twin.Participant] = field(default_factory=dict)
    users: dict[str, object] = field(default_factory=dict)
    browsers: dict[str, Client] = field(default_factory=dict)


def datasets_of(world: HubWorld, feeder_indexes: list[int], categories: list[str]) -> list[str]:
    return [DatasetKey(world.grid.pk, world.feeders[k].pk, category).id for k in feeder_indexes for category in categories]


def ask(world: HubWorld, offer: DatasetOffer, feeder_indexes=(0, 1), categories=tuple(DataCategory.values), **changes) -> AccessRequest:
    now = timezone.now()
    asks = {"consumer": world.consumer, "datasets": datasets_of(world, list(feeder_indexes), list(categories)), "purpose": PURPOSE,
            "valid_from": now, "valid_until": now + timedelta(days=60), "resolution": "hour", "message": "For our winter flexibility pilot",
            "offer": offer, **changes}
    return request_create(**asks)


def grid_extras(world: HubWorld) -> None:
    """What the metered grid lacks for a preview: a line inside feeder 0, one out of it, a violation in it, a hosting-capacity run."""
    f0, f1 = world.feeders[0], world.feeders[1]
    bus0, bus1 = (twin.Bus.objects.get(grid=world.grid, feeder=f) for f in (f0, f1))
    extra = twin.Bus.objects.create(iri=f"{world.grid.iri}/bus/0b", grid=world.grid, base_voltage=bus0.base_voltage, feeder=f0)
    line = dict(grid=world.grid, length_km=0.1, r_ohm=0.02, x_ohm=0.01)
    twin.Line.objects.create(iri=f"{world.grid.iri}/line/0", name="line 0", feeder=f0, from_bus=bus0, to_bus=extra, **line)
    twin.Line.objects.create(iri=f"{world.grid.iri}/line/2", name="line 2", feeder=world.feeders[2], from_bus=bus1,
                             to_bus=twin.Bus.objects.get(grid=world.grid, feeder=world.feeders[2]), **line)
    twin.Violation.objects.create(run=world.run, grid=world.grid, element="bus", asset_iri=bus0.iri, quantity="vm_pu", start=START,
                                  end=START + timedelta(minutes=15), steps=1, value=0.88, limit=0.9, severity="major")
    hosting = twin.LoadFlowRun.objects.create(grid=world.grid, kind=twin.LoadFlowRun.Kind.HOSTING_CAPACITY, at=START,
                                              status=twin.LoadFlowRun.Status.SUCCEEDED, finished_at=timezone.now())
    twin.HostingCapacityResult.objects.bulk_create([twin.HostingCapacityResult(run=hosting, bus=bus, pv_kw=30.0 + k, load_kw=20.0,
                                                                               pv_limited_by="vm_pu", load_limited_by="loading_percent")
                                                    for k, bus in enumerate(twin.Bus.objects.filter(grid=world.grid).order_by("id"))])


@pytest.fixture
def bench() -> Bench:
    world = hub_world_create(feeders=3, meters_per_feeder=6, steps=8)
    grid_extras(world)
    offer = offer_create(world.provider, world.grid, categories=list(DataCategory.values), resolution="15min", audience=["aggregator"],
                         feeder_iris=[f.iri for f in world.feeders])
    req = ask(world, offer)
    sued, other = participant_create("Stadtwerke Sued", ["dso"]), participant_create("Other Aggregator", ["aggregator"])
    sued_grid = metered_grid_create(sued, name="lv-sued", feeders=1, meters_per_feeder=2)
    sued_offer = offer_create(sued, sued_grid)
    other_req = request_create(consumer=other, datasets=[DatasetKey(sued_grid.pk, None, "telemetry").id], purpose=PURPOSE,
                               valid_from=timezone.now(), valid_until=timezone.now() + timedelta(days=30), offer=sued_offer)
    found = Bench(world=world, offer=offer, request=req, other_request=other_req,
                  participants={"a": world.provider, "b": world.consumer, "c": sued, "d": other})
    found.users = {"steward_a": staff_user("steward-a", stewards=[world.provider]), "steward_b": staff_user("steward-b",
                                                                                                          stewards=[world.consumer]),
                   "steward_c": staff_user("steward-c", stewards=[sued]), "superuser": staff_user("root", superuser=True),
                   "nobody": staff_user("nobody")}
    for name, user in found.users.items():
        found.browsers[name] = Client()
        found.browsers[name].force_login(user)
    return found


def url(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


def shown(response) -> list:
    return list(response.context["cl"].result_list)


def messages_of(response) -> list[str]:
    return [m.message for m in get_messages(response.wsgi_request)]


def act(browser: Client, changelist: str, action: str, *objects, **extra):
    return browser.post(changelist, {"action": action, "_selected_action": [o.pk for o in objects], **extra})


def counter_form_data(req: AccessRequest, **changes) -> dict:
    """The counter-offer form as a browser posts it unchanged (prefilled with the request's terms), with `changes`."""
    terms = request_terms(req)
    data = {}
    for name in COUNTERABLE_TERMS:
        value = terms[name]
        if name in ("valid_from", "valid_until", "data_start", "data_end"):
            local = timezone.localtime(value) if value else None
            data[f"{name}_0"], data[f"{name}_1"] = (f"{local:%Y-%m-%d}", f"{local:%H:%M:%S}") if local else ("", "")
        elif name == "feeder_iris":
            data[name] = "\n".join(value)
        elif isinstance(value, list):
            data[name] = value
        else:
            data[name] = "" if value is None else str(value)
    return data | changes


def shared_get(world: HubWorld, route: str, agreement: Agreement, **params):
    response = world.clients["consumer"].get(f"/api/v1/shared/{route}", {"purpose": PURPOSE, "agreement": agreement.pk, **params})
    assert response.status_code == 200, (route, response.content)
    return response.json()


def as_json(value):
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


# --- the inbox ---------------------------------------------------------------------------------------


def test_the_inbox_shows_each_steward_only_its_participants_requests(bench):
    req, other = bench.request, bench.other_request

    assert shown(bench.browsers["steward_a"].get(INBOX)) == [req]
    assert shown(bench.browsers["steward_c"].get(INBOX)) == [other]
    assert shown(bench.browsers["steward_b"].get(INBOX)) == [req]  # the consumer's steward follows what its participant asked
    assert set(shown(bench.browsers["superuser"].get(INBOX))) == {req, other}
    assert shown(bench.browsers["steward_b"].get(INBOX, {"direction": "received"})) == []
    assert shown(bench.browsers["steward_b"].get(INBOX, {"direction": "made"})) == [req]

    for target in (url("sharing_accessrequest_change", req.pk), url("sharing_accessrequest_reject", req.pk),
                   url("sharing_accessrequest_counter", req.pk), url("sharing_accessrequest_preview", req.pk)):
        response = bench.browsers["steward_c"].get(target)
        assert response.status_code == 302 and response.url == reverse("admin:index"), target  # as for a request that does not exist
    assert bench.browsers["steward_c"].post(url("sharing_accessrequest_approve", req.pk)).status_code == 302
    req.refresh_from_db()
    assert req.status == "pending"


def test_the_request_page_shows_the_request_and_what_an_approval_grants(bench):
    req, world = bench.request, bench.world

    page = bench.browsers["steward_a"].get(url("sharing_accessrequest_change", req.pk)).content.decode()

    assert agreement_summary(request_preview_agreement(req)) in page
    assert "For our winter flexibility pilot" in page and "Flex Aggregator" in page
    assert f"{world.grid.name} › feeder 0: telemetry" in page and f"{world.grid.name} › feeder 1: topology" in page
    for label in ("Approve (put in force)", "Approve as an offer (consumer accepts)", "Reject…", "Counter-offer…", "Preview access"):
        assert label in page
    assert url("sharing_accessrequest_scope_picture", req.pk) in page
    assert 'name="purpose"' not in page  # read-only

    consumer_side = bench.browsers["steward_b"].get(url("sharing_accessrequest_change", req.pk)).content.decode()
    assert agreement_summary(request_preview_agreement(req)) in consumer_side
    assert "Approve (put in force)" not in consumer_side and url("sharing_accessrequest_scope_picture", req.pk) not in consumer_side


def test_pending_requests_come_first_then_the_newest(bench):
    world = bench.world
    older = bench.request
    newer = ask(world, bench.offer, feeder_indexes=[1], categories=["telemetry"])
    newest = ask(world, bench.offer, feeder_indexes=[2], categories=["telemetry"])
    act(bench.browsers["steward_a"], INBOX, "reject", newest, confirm="yes", reason="feeder 2 is being rebuilt")

    assert shown(bench.browsers["steward_a"].get(INBOX)) == [newer, older, newest]
    assert shown(bench.browsers["steward_a"].get(INBOX, {"status__exact": "pending"})) == [newer, older]
    assert shown(bench.browsers["steward_a"].get(INBOX, {"purpose__exact": "research"})) == []


def test_approve_puts_an_agreement_in_force_that_the_consumer_reads(bench):
    req, world = bench.request, bench.world

    response = bench.browsers["steward_a"].post(url("sharing_accessrequest_approve", req.pk), follow=True)

    req.refresh_from_db()
    assert req.status == "approved" and req.decided_by == bench.users["steward_a"]
    agreement = req.agreement
    assert agreement.status == "active" and agreement.activated_by == bench.users["steward_a"]
    assert agreement.feeder_iris == sorted([world.feeders[0].iri, world.feeders[1].iri]) and agreement.resolution == "hour"
    assert any("approved; the agreement is in force" in m for m in messages_of(response))
    body = shared_get(world, "telemetry", agreement, quantity="active_power", start=START.isoformat(),
                      end=(START + timedelta(hours=2)).isoformat())
    assert {group["group"] for group in body["series"]} == {world.feeders[0].iri, world.feeders[1].iri}
    assert AuditEntry.objects.filter(action="request.approve", credential=f"admin:{bench.users['steward_a'].pk}").exists()
    again = bench.browsers["steward_a"].post(url("sharing_accessrequest_approve", req.pk), follow=True)
    assert any("a request that is approved cannot be approved" in m for m in messages_of(again))


def test_approve_as_an_offer_leaves_it_to_the_consumer(bench):
    req = bench.request

    act(bench.browsers["steward_a"], INBOX, "approve_as_offer", req)

    req.refresh_from_db()
    assert req.status == "offered" and req.agreement.status == "offered"
    request_accept(req=req, actor=bench.world.consumer)
    req.refresh_from_db()
    assert req.agreement.status == "active"


@pytest.mark.parametrize(("url_name", "status"), [("admin:sharing_accessrequest_approve", "approved"),
                                                  ("admin:sharing_accessrequest_approve_offer", "offered")])
def test_the_request_pages_approve_buttons_approve_as_they_say(bench, url_name, status):
    req = bench.request
    response = bench.browsers["steward_a"].post(reverse(url_name, args=[req.pk]))
    assert response.status_code in (200, 302)
    req.refresh_from_db()
    assert req.status == status and req.agreement.status == ("active" if status == "approved" else "offered")


@pytest.mark.parametrize("persona", ["steward_b", "superuser"])
def test_only_the_providers_steward_decides(bench, persona):
    req = bench.request

    for action in ("approve", "approve_as_offer"):
        response = act(bench.browsers[persona], INBOX, action, req)
        assert any("only a steward of Stadtwerke Nord" in m for m in messages_of(response))
    bench.browsers[persona].post(url("sharing_accessrequest_approve", req.pk))
    bench.browsers[persona].post(url("sharing_accessrequest_reject", req.pk), {"reason": "no"})
    bench.browsers[persona].post(url("sharing_accessrequest_counter", req.pk), counter_form_data(req, resolution="day"))

    req.refresh_from_db()
    assert req.status == "pending" and req.agreement is None
    assert bench.browsers[persona].get(url("sharing_accessrequest_preview", req.pk)).status_code == 403


def test_reject_needs_a_reason(bench):
    req, browser = bench.request, bench.browsers["steward_a"]

    form = browser.get(url("sharing_accessrequest_reject", req.pk))
    empty = browser.post(url("sharing_accessrequest_reject", req.pk), {"reason": "  "})

    assert form.status_code == 200 and 'name="reason"' in form.content.decode()
    assert empty.status_code == 200 and "Say why the request is rejected." in empty.content.decode()
    req.refresh_from_db()
    assert req.status == "pending"

    done = browser.post(url("sharing_accessrequest_reject", req.pk), {"reason": "feeder 1 is being rebuilt"})

    assert done.status_code == 302
    req.refresh_from_db()
    assert (req.status, req.reason, req.agreement) == ("rejected", "feeder 1 is being rebuilt", None)


def test_reject_from_the_inbox_asks_for_the_reason_first(bench):
    req, browser = bench.request, bench.browsers["steward_a"]

    asked = act(browser, INBOX, "reject", req)
    without = act(browser, INBOX, "reject", req, confirm="yes", reason="")

    assert asked.status_code == 200 and 'name="reason"' in asked.content.decode() and "Reject" in asked.content.decode()
    assert without.status_code == 200 and "Say why the request is rejected." in without.content.decode()
    req.refresh_from_db()
    assert req.status == "pending"
    act(browser, INBOX, "reject", req, confirm="yes", reason="out of scope")
    req.refresh_from_db()
    assert (req.status, req.reason) == ("rejected", "out of scope")


def test_the_counter_offer_form_holds_every_counterable_term_prefilled(bench):
    req = bench.request
    form = CounterOfferForm(req=req)

    assert set(form.fields) - {"reason"} == set(COUNTERABLE_TERMS)
    page = bench.browsers["steward_a"].get(url("sharing_accessrequest_counter", req.pk))
    assert page.status_code == 200
    assert page.context["form"].initial["resolution"] == "hour"
    unchanged = bench.browsers["steward_a"].post(url("sharing_accessrequest_counter", req.pk), counter_form_data(req))
    assert unchanged.status_code == 200 and "Change at least one term" in unchanged.content.decode()


def test_a_counter_offer_with_a_coarser_resolution_offers_an_agreement_with_it(bench):
    req = bench.request

    response = bench.browsers["steward_a"].post(url("sharing_accessrequest_counter", req.pk),
                                                counter_form_data(req, resolution="day", reason="daily is enough for the pilot"))

    assert response.status_code == 302, response.content.decode()
    req.refresh_from_db()
    assert req.status == "countered" and req.counter_terms == {"resolution": "day"} and req.reason == "daily is enough for the pilot"
    assert (req.agreement.status, req.agreement.resolution) == ("offered", "day")
    assert req.agreement.valid_until.replace(microsecond=0) == req.valid_until.replace(microsecond=0)


def test_a_counter_offer_outside_the_offers_feeders_is_refused(bench):
    req = bench.request

    response = bench.browsers["steward_a"].post(url("sharing_accessrequest_counter", req.pk),
                                                counter_form_data(req, feeder_iris="https://evil.example/feeder"))

    assert response.status_code == 200 and "not a feeder of the offer" in response.content.decode()
    req.refresh_from_db()
    assert req.status == "pending"


def test_a_counter_offer_the_agreement_rules_refuse_is_shown_and_changes_nothing(bench):
    req = bench.request
    before = f"{timezone.localtime(req.valid_from) - timedelta(days=1):%Y-%m-%d}"

    response = bench.browsers["steward_a"].post(url("sharing_accessrequest_counter", req.pk),
                                                counter_form_data(req, valid_until_0=before, valid_until_1="00:00:00"))

    assert response.status_code == 200 and "must be after valid_from" in response.content.decode()
    req.refresh_from_db()
    assert req.status == "pending" and not Agreement.objects.filter(consumer=bench.world.consumer, status="offered").exists()


def test_a_staff_user_who_stewards_nothing_sees_no_workbench(bench):
    browser = bench.browsers["nobody"]

    assert browser.get(INBOX).status_code == 403
    assert browser.get(OFFERS).status_code == 403
    assert browser.get(url("sharing_auditentry_export", "csv")).status_code == 403
    response = browser.get(url("sharing_accessrequest_preview", bench.request.pk))
    assert response.status_code == 302 and response.url == reverse("admin:index")
    assert browser.get(url("sharing_agreement_scope_picture", bench.world.agreement.pk)).status_code == 404
    assert browser.get(url("sharing_accessrequest_scope_picture", bench.request.pk)).status_code == 404


# --- the access preview -------------------------------------------------------------------------------


def test_the_preview_promises_what_the_consumer_then_gets(bench):
    req, world = bench.request, bench.world
    preview_page = bench.browsers["steward_a"].get(url("sharing_accessrequest_preview", req.pk))
    assert preview_page.status_code == 200
    preview = preview_page.context["preview"]
    assert [c.category for c in preview.categories] == list(DataCategory.values)
    assert all(c.allowed for c in preview.categories)

    bench.browsers["steward_a"].post(url("sharing_accessrequest_approve", req.pk))
    req.refresh_from_db()
    agreement = req.agreement

    assets = preview.category("asset_metadata")
    counts = dict(assets.counts)
    samples = {s.title: s for s in assets.samples}
    for type_name in MODEL_OF_TYPE:
        body = shared_get(world, SHARED_ROUTES[type_name], agreement)
        assert counts[ASSET_LABELS[type_name]] == body["count"], type_name
        if body["count"]:
            assert as_json(samples[ASSET_LABELS[type_name]].rows) == body["results"][:3], type_name
    assert counts["meters"] == 12 and counts["buses"] == 3 and counts["lines"] == 1
    assert all("lon_degree" not in row and "owner" not in row for sample in assets.samples for row in sample.rows)

    topology = shared_get(world, "topology", agreement)
    assert preview.category("topology").count == topology["count"] == 4  # three buses and the line between two of them
    assert preview.category("topology").samples[0].rows == topology["results"][:3]

    telemetry = shared_get(world, "telemetry", agreement, quantity="active_power", start=START.isoformat(),
                           end=(START + timedelta(hours=2)).isoformat())
    assert [(g["group"], g["meters"], g["suppressed"]) for g in telemetry["series"]] == \
        [(g["group"], g["meters"], g["suppressed"]) for g in preview.category("telemetry").groups]
    assert preview.category("telemetry").count == 12

    runs = shared_get(world, "loadflow/runs", agreement)
    assert preview.category("loadflow_results").count == runs["count"] == 2
    assert [r["id"] for r in preview.category("loadflow_results").samples[0].rows] == [r["id"] for r in runs["results"][:3]]
    violations = shared_get(world, "violations", agreement)
    assert preview.category("violations").count == violations["count"] == 1
    hosting = shared_get(world, "hosting-capacity", agreement)
    assert preview.category("hosting_capacity").count == hosting["count"] == 3
    assert as_json(preview.category("hosting_capacity").samples[0].rows) == hosting["results"][:3]

    entries = AuditEntry.objects.filter(preview=True)
    assert entries.count() == len(MODEL_OF_TYPE) + 5
    assert all(e.participant_iri == world.provider.iri and e.provider_iri == world.provider.iri and e.rule.startswith("preview:agreement:")
               and e.agreement_uid == f"urn:gridtwin:preview:request:{req.pk}" for e in entries)
    assert entries.get(resource="shared.telemetry").records == 12


def test_the_preview_shows_groups_below_k_as_suppressed(bench):
    req, world = bench.request, bench.world
    bench.browsers["steward_a"].post(url("sharing_accessrequest_counter", req.pk), counter_form_data(req, min_group_size="7"))
    req.refresh_from_db()
    offered = req.agreement
    assert offered.status == "offered" and offered.min_group_size == 7

    page = bench.browsers["steward_a"].get(url("sharing_agreement_preview", offered.pk))

    assert page.status_code == 200
    telemetry = page.context["preview"].category("telemetry")
    assert [g["suppressed"] for g in telemetry.groups] == [True, True]
    assert dict(telemetry.counts)["groups suppressed (fewer than 7 meters)"] == 2
    assert "yes (fewer than k)" in page.content.decode()
    request_accept(req=req, actor=world.consumer)
    body = shared_get(world, "telemetry", offered, quantity="active_power", start=START.isoformat(),
                      end=(START + timedelta(hours=2)).isoformat())
    assert [g["suppressed"] for g in body["series"]] == [True, True]


def test_the_agreement_page_links_the_preview_for_the_providers_steward(bench):
    agreement = bench.world.agreement  # active, feeder 0, every category
    page = bench.browsers["steward_a"].get(url("sharing_agreement_change", agreement.pk)).content.decode()

    assert url("sharing_agreement_preview", agreement.pk) in page and "Preview access" in page
    assert url("sharing_agreement_scope_picture", agreement.pk) in page
    consumer_side = bench.browsers["steward_b"].get(url("sharing_agreement_change", agreement.pk)).content.decode()
    assert url("sharing_agreement_preview", agreement.pk) not in consumer_side
    assert bench.browsers["steward_b"].get(url("sharing_agreement_preview", agreement.pk)).status_code == 403
    assert bench.browsers["steward_c"].get(url("sharing_agreement_preview", agreement.pk)).status_code == 302

    preview = bench.browsers["steward_a"].get(url("sharing_agreement_preview", agreement.pk)).context["preview"]
    assert preview.category("telemetry").count == 6
    body = shared_get(bench.world, "meters", agreement)
    assert dict(preview.category("asset_metadata").counts)["meters"] == body["count"] == 6


def test_a_preview_of_an_unsaved_or_revoked_agreement_decides_as_if_in_force(bench):
    world = bench.world
    revoked = services.agreement_transition(agreement=world.agreement, step="revoke", actor=world.provider)

    for agreement in (request_preview_agreement(bench.request), revoked):
        preview = access_preview(agreement, steward_participant=world.provider, credential="test", sample_size=1)
        assert preview.category("telemetry").count > 0
        assert all(len(sample.rows) <= 1 for c in preview.categories for sample in c.samples)
    assert world.clients["consumer"].get("/api/v1/shared/meters", {"purpose": PURPOSE}).status_code == 404  # nothing in force


# --- versions --------------------------------------------------------------------------------------


def test_the_changes_page_lists_the_terms_an_amendment_changed(bench):
    world, browser = bench.world, bench.browsers["steward_a"]
    amendment = services.agreement_amend(agreement=world.agreement, actor=world.provider, resolution="day", min_group_size=8,
                                         feeder_iris=[world.feeders[0].iri, world.feeders[1].iri])

    page = browser.get(url("sharing_agreement_change", amendment.pk)).content.decode()
    assert url("sharing_agreement_changes", amendment.pk) in page and "Changes from version 1" in page
    response = browser.get(url("sharing_agreement_changes", amendment.pk))

    assert response.status_code == 200
    assert [term for term, _, _ in response.context["changes"]] == ["feeder iris", "resolution", "min group size"]
    assert ("resolution", "hour", "day") in response.context["changes"] and ("min group size", "5", "8") in response.context["changes"]
    text = response.content.decode()
    assert agreement_summary(world.agreement) in text and agreement_summary(amendment) in text
    assert bench.browsers["steward_c"].get(url("sharing_agreement_changes", amendment.pk)).status_code == 302
    first = browser.get(url("sharing_agreement_change", world.agreement.pk)).content.decode()
    assert url("sharing_agreement_changes", world.agreement.pk) not in first


# --- offers ----------------------------------------------------------------------------------------


def offer_form(bench: Bench, **changes) -> dict:
    world = bench.world
    data = {"title": "Feeder 2 telemetry", "description": "", "provider": world.provider.pk, "grid": world.grid.pk,
            "feeder_iris": world.feeders[2].iri, "categories": ["telemetry"], "purposes": [PURPOSE], "resolution": "hour",
            "max_days": "90", "audience": ["aggregator"], "group_by": "feeder", "min_group_size": "5", "dropped_fields": ["owner"],
            "prohibitions": ["sell"], "attribution": "", "delete_after_days": ""}
    return data | changes


def test_a_steward_creates_and_publishes_an_offer_of_its_own_grids(bench):
    browser = bench.browsers["steward_a"]

    response = browser.post(url("sharing_datasetoffer_add"), offer_form(bench))

    assert response.status_code == 302, response.content.decode()
    offer = DatasetOffer.objects.get(title="Feeder 2 telemetry")
    assert (offer.provider, offer.published, offer.feeder_iris, offer.categories) == \
        (bench.world.provider, False, [bench.world.feeders[2].iri], ["telemetry"])
    assert offer.uid.startswith("urn:uuid:")
    act(browser, OFFERS, "publish", offer)
    offer.refresh_from_db()
    assert offer.published
    assert list(AuditEntry.objects.filter(agreement_uid=offer.uid).values_list("action", flat=True).order_by("id")) == \
        ["offer.create", "offer.publish"]
    page = browser.get(url("sharing_datasetoffer_change", offer.pk)).content.decode()
    assert DatasetKey(bench.world.grid.pk, bench.world.feeders[2].pk, "telemetry").id in page
    assert f"{bench.world.grid.name} › feeder 2: telemetry" in page
    assert set(shown(browser.get(OFFERS))) == {offer, bench.offer}
    edit = bench.browsers["superuser"].post(url("sharing_datasetoffer_change", offer.pk), offer_form(bench, title="Taken over"))
    assert edit.status_code == 403  # published: only the provider's steward changes what it offers
    offer.refresh_from_db()
    assert offer.title == "Feeder 2 telemetry"


def test_an_offer_names_only_the_stewards_participants_and_their_grids(bench):
    browser = bench.browsers["steward_a"]
    sued = bench.participants["c"]
    sued_grid = twin.Grid.objects.get(owner=sued)

    as_other = browser.post(url("sharing_datasetoffer_add"), offer_form(bench, provider=sued.pk, grid=sued_grid.pk, feeder_iris=""))
    other_grid = browser.post(url("sharing_datasetoffer_add"), offer_form(bench, grid=sued_grid.pk, feeder_iris=""))

    assert as_other.status_code == 200 and "provider" in as_other.context["adminform"].form.errors
    assert other_grid.status_code == 200 and "grid" in other_grid.context["adminform"].form.errors
    assert not DatasetOffer.objects.filter(title="Feeder 2 telemetry").exists()
    form = browser.get(url("sharing_datasetoffer_add")).context["adminform"].form
    assert list(form.fields["provider"].queryset) == [bench.world.provider]
    assert list(form.fields["grid"].queryset) == [bench.world.grid]
    assert shown(bench.browsers["steward_c"].get(OFFERS)) == [DatasetOffer.objects.get(provider=sued)]
    assert browser.get(url("sharing_datasetoffer_change", DatasetOffer.objects.get(provider=sued).pk)).status_code == 302


def test_a_requested_offer_is_unpublished_never_deleted(bench):
    browser, offer = bench.browsers["steward_a"], bench.offer

    assert browser.get(url("sharing_datasetoffer_delete", offer.pk)).status_code == 403
    act(browser, OFFERS, "delete_selected", offer)
    act(browser, OFFERS, "unpublish", offer)

    offer.refresh_from_db()
    assert not offer.published
    fresh = offer_create(bench.world.provider, bench.world.grid, published=False)
    assert browser.post(url("sharing_datasetoffer_delete", fresh.pk), {"post": "yes"}).status_code == 302
    assert not DatasetOffer.objects.filter(pk=fresh.pk).exists()


# --- the audit -------------------------------------------------------------------------------------


def exported(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_audit_filters_by_consumer_agreement_purpose_period_and_preview(bench):
    world, browser = bench.world, bench.browsers["steward_a"]
    read = world.clients["consumer"].get("/api/v1/shared/meters", {"purpose": PURPOSE})
    assert read.status_code == 200
    access_preview(world.agreement, steward_participant=world.provider, credential="test")

    by_consumer = shown(browser.get(AUDIT, {"participant_iri": world.consumer.iri}))
    by_agreement = shown(browser.get(AUDIT, {"agreement_uid": world.agreement.uid}))
    previews = shown(browser.get(AUDIT, {"preview__exact": "1"}))
    no_previews = shown(browser.get(AUDIT, {"preview__exact": "0"}))
    today = f"{timezone.localdate():%Y-%m-%d}"
    tomorrow = f"{timezone.localdate() + timedelta(days=1):%Y-%m-%d}"

    assert by_consumer and all(e.participant_iri == world.consumer.iri for e in by_consumer)
    assert any(e.resource == "shared.meter" or e.resource == "shared.asset" for e in by_consumer)
    assert by_agreement and all(e.agreement_uid == world.agreement.uid for e in by_agreement)
    assert previews and all(e.preview for e in previews) and not any(e.preview for e in no_previews)
    assert set(shown(browser.get(AUDIT, {"at__gte": today}))) == set(shown(browser.get(AUDIT)))
    assert shown(browser.get(AUDIT, {"at__lt": today})) == []
    assert shown(browser.get(AUDIT, {"at__gte": tomorrow})) == []
    assert all(e.purpose == PURPOSE for e in shown(browser.get(AUDIT, {"purpose": PURPOSE})))
    assert browser.get(AUDIT, {"at__gte": "not a date"}).status_code == 302  # the admin's answer to a bad filter (?e=1)
    page = browser.get(AUDIT).content.decode()
    assert "consumer (who asked)" in page and "Flex Aggregator" in page and "Export CSV" in page


def test_the_audit_export_holds_only_the_stewards_rows_and_is_audited(bench):
    world = bench.world
    browser = bench.browsers["steward_a"]
    mine = {world.provider.iri}
    visible = AuditEntry.objects.filter(provider_iri__in=mine) | AuditEntry.objects.filter(participant_iri__in=mine)
    expected = set(visible.values_list("id", flat=True))
    assert AuditEntry.objects.exclude(id__in=expected).exists()  # Stadtwerke Sued's rows exist and must stay out

    response = browser.get(url("sharing_auditentry_export", "csv"))

    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response["X-Export-Limit"] == "100000" and response["X-Export-Truncated"] == "false"
    rows = exported(response)
    assert {int(r["id"]) for r in rows} == expected and int(response["X-Export-Rows"]) == len(rows)
    assert [int(r["id"]) for r in rows] == sorted(expected, reverse=True)
    export = AuditEntry.objects.get(action="audit.export")
    assert export.participant_iri == world.provider.iri and export.records == len(rows)
    assert export.credential == f"admin:{bench.users['steward_a'].pk}"
    assert export.id not in {int(r["id"]) for r in rows}

    filtered = exported(browser.get(f"{url('sharing_auditentry_export', 'csv')}?participant_iri={world.consumer.iri}"))
    assert filtered and all(r["participant_iri"] == world.consumer.iri for r in filtered)
    lines = b"".join(browser.get(url("sharing_auditentry_export", "jsonl"), {"action": "audit.export"}).streaming_content).splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["audit.export", "audit.export"]
    sued = bench.participants["c"].iri
    others = exported(bench.browsers["steward_c"].get(url("sharing_auditentry_export", "csv")))
    assert others and all(sued in (r["provider_iri"], r["participant_iri"]) for r in others)
    assert not {int(r["id"]) for r in others} & expected


def test_the_audit_export_is_bounded(bench, monkeypatch):
    monkeypatch.setattr("sharing.admin.MAX_EXPORT_ROWS", 3)
    monkeypatch.setattr("sharing.admin.EXPORT_CHUNK", 2)

    response = bench.browsers["superuser"].get(url("sharing_auditentry_export", "csv"))

    rows = exported(response)
    assert len(rows) == 3 and response["X-Export-Truncated"] == "true"
    assert [int(r["id"]) for r in rows] == list(AuditEntry.objects.exclude(action="audit.export").order_by("-id")
                                                .values_list("id", flat=True)[:3])
    assert AuditEntry.objects.get(action="audit.export").query["truncated"] == "yes"


# --- the scope picture -------------------------------------------------------------------------------


def test_the_scope_picture_is_a_png_for_the_providers_steward_only(bench):
    agreement, req = bench.world.agreement, bench.request

    for target in (url("sharing_agreement_scope_picture", agreement.pk), url("sharing_accessrequest_scope_picture", req.pk)):
        response = bench.browsers["steward_a"].get(target)
        assert response.status_code == 200 and response["Content-Type"] == "image/png" and response.content.startswith(PNG)
        assert bench.browsers["steward_c"].get(target).status_code == 404  # another participant's: as if absent
        assert bench.browsers["steward_b"].get(target).status_code == 403  # the consumer's steward sees the agreement, not the grid
