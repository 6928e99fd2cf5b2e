"""Races on PostgreSQL: two requests at once, each on its own connection (threads; the rows they see are committed).

The uploads are held at the same point (after validation, before the grid is looked up) by a barrier, so both
look for the grid before either has committed it: the race the lock has to win, every time, not by luck.
"""

import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from tests.conftest import token_client
from twin import models, services

pytestmark = pytest.mark.django_db(transaction=True)


def upload_at_once(clients, body: bytes, monkeypatch) -> list:
    barrier = threading.Barrier(len(clients), timeout=30)
    check = services._check

    def check_then_wait(*args, **kwargs):
        rows = check(*args, **kwargs)
        barrier.wait()
        return rows

    monkeypatch.setattr(services, "_check", check_then_wait)
    answers = [None] * len(clients)

    def post(i, client):
        try:
            answers[i] = client.post("/api/v1/models/", data=body, content_type="text/turtle")
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(i, c)) for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def member(participant, name):
    user = get_user_model().objects.create_user(name, password=f"pw-{name}-1")
    participant.members.add(user)
    return token_client(user, participant)


def test_two_concurrent_first_uploads_of_a_grid_make_one_grid(utility, lv_turtle, lv_net, monkeypatch):
    answers = upload_at_once([member(utility, "op-a"), member(utility, "op-b")], lv_turtle, monkeypatch)
    assert sorted(a.status_code for a in answers) == [200, 201], [a.content[:300] for a in answers]
    grid = models.Grid.objects.get()
    assert grid.version == 1 and [a.json()["id"] for a in answers] == [grid.pk, grid.pk]
    assert models.Load.objects.filter(grid=grid).count() == len(lv_net.load) and models.Line.objects.count() == len(lv_net.line)


def test_concurrent_first_uploads_by_two_participants_give_the_grid_to_one_and_409_to_the_other(utility, other_utility, lv_turtle,
                                                                                                   monkeypatch):
    answers = upload_at_once([member(utility, "op-a"), member(other_utility, "op-b")], lv_turtle, monkeypatch)
    assert sorted(a.status_code for a in answers) == [201, 409], [a.content[:300] for a in answers]
    assert next(a for a in answers if a.status_code == 409).json()["reason"] == "iri_conflict"
    assert models.Grid.objects.count() == 1
