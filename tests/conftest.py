"""Personas and grids shared by the tests.

Personas: `operator` acts for the utility that publishes grids, `other_operator` for another
utility, `anonymous` has no credentials. Fixture grids come from SimBench, converted once per run.
"""

import pytest
from django.contrib.auth import get_user_model
from django.core.servers.basehttp import WSGIRequestHandler
from rest_framework.test import APIClient

from tests.browser import browser, browser_factory, pytest_runtest_makereport  # noqa: F401  (real-browser fixtures, screenshots)
from twin.models import Credential, Participant

LV_CODE = "1-LV-rural1--0-sw"
MV_CODE = "1-MV-urban--0-sw"  # off-neutral taps, disconnectors and open switches

# The live server (pytest-django's `live_server`) writes a response's headers and body in separate small packets; with Nagle's
# algorithm on, the second waits for the client's delayed ACK (~40 ms a request on Linux). Measured on the schema fuzz run:
# 73 ms a case, three quarters of it idle. gunicorn sets TCP_NODELAY itself; the test server is told to do the same.
WSGIRequestHandler.disable_nagle_algorithm = True


def token_client(user, participant=None) -> APIClient:
    client = APIClient()
    participant = participant or Participant.objects.get(members=user)
    _, raw = Credential.issue(kind=Credential.Kind.TOKEN, participant=participant, user=user, name="test")
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    return client


@pytest.fixture
def utility(db) -> Participant:
    return Participant.objects.create(iri="https://gridtwin.example/id/participant/utility", name="Utility")


@pytest.fixture
def other_utility(db) -> Participant:
    return Participant.objects.create(iri="https://gridtwin.example/id/participant/other-utility", name="Other utility")


@pytest.fixture
def operator(utility) -> APIClient:
    user = get_user_model().objects.create_user("operator", password="pw-operator-1")
    utility.members.add(user)
    return token_client(user)


@pytest.fixture
def other_operator(other_utility) -> APIClient:
    user = get_user_model().objects.create_user("other", password="pw-other-1")
    other_utility.members.add(user)
    return token_client(user)


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


@pytest.fixture(scope="session")
def lv_net():
    """The SimBench LV grid used across tests (loading SimBench costs seconds: once per run)."""
    import simbench

    return simbench.get_simbench_net(LV_CODE)


@pytest.fixture(scope="session")
def mv_net():
    """The SimBench MV grid used across tests (4–5 s to load: once per run). Read it; copy it before changing it."""
    import simbench

    return simbench.get_simbench_net(MV_CODE)


@pytest.fixture(scope="session")
def small_graph():
    """pandapower's `example_simple` in the RDF form (293 triples: external grid, transformer, lines, switches, load,
    static generator, generator, shunt): where pyshacl is the reference, it takes ~17 s on this against ~48 s on the
    SimBench LV grid, for the same constraint components. Copy it (`Graph() + small_graph`) before changing it."""
    import pandapower.networks as pn
    from rdflib import Graph

    from ontology.converters.pandapower_net import net_to_graph

    return Graph() + net_to_graph(pn.example_simple(), grid_iri="https://gridtwin.example/id/example-simple", grid_name="example")


@pytest.fixture(scope="session")
def lv_turtle(lv_net) -> bytes:
    """The LV grid in the gridtwin RDF form, as Turtle, owned by no one in particular."""
    from ontology.converters.pandapower_net import net_to_graph
    from ontology.serialization import serialize

    graph = net_to_graph(lv_net, grid_iri=f"https://gridtwin.example/id/simbench/{LV_CODE}", grid_name=LV_CODE)
    return serialize(graph, "turtle")
