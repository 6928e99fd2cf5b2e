"""Stewards and operators in the admin: lists load, and a save is judged by the same shapes as an upload."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from twin import models, services
from twin.selectors import grid_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def steward() -> Client:
    user = get_user_model().objects.create_superuser("steward", password="pw-steward-1")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def grid(utility, lv_turtle):
    from ontology.parsing import parse_rdf

    document = parse_rdf(lv_turtle, "text/turtle", max_bytes=10**8, max_literal_chars=10**5)
    return services.grid_import_graph(graph=document, participant=utility).grid


def change_form_data(obj) -> dict:
    """The admin change form's fields for `obj`, as the browser would post them unchanged."""
    _, rows, _ = grid_rows(obj.grid, {obj.iri})
    row = rows[type(obj).__name__][0]
    data = {}
    for field in type(obj)._meta.concrete_fields:
        if field.name == "id":
            continue
        value = row[field.attname]
        data[field.name] = "" if value is None else ("on" if value is True else value)
        if value is False:
            data.pop(field.name)
        if field.name == "part_iris":
            data[field.name] = json.dumps(value)
    return data


@pytest.mark.parametrize("model", [models.Grid, models.Bus, *models.ASSET_MODELS])
def test_admin_lists_load(steward, grid, model):
    response = steward.get(reverse(f"admin:twin_{model._meta.model_name}_changelist"))
    assert response.status_code == 200


def test_admin_save_violating_a_shape_is_refused_with_the_shapes_message(steward, grid):
    line = models.Line.objects.filter(grid=grid).first()
    data = change_form_data(line) | {"length_km": "-0.3"}

    response = steward.post(reverse("admin:twin_line_change", args=[line.pk]), data)

    assert response.status_code == 200  # the form again, with errors
    assert b"a line needs one length in km, greater than 0" in response.content
    line.refresh_from_db()
    assert line.length_km > 0


def test_admin_save_that_conforms_is_stored(steward, grid):
    line = models.Line.objects.filter(grid=grid).first()
    data = change_form_data(line) | {"length_km": "0.321"}

    response = steward.post(reverse("admin:twin_line_change", args=[line.pk]), data)

    assert response.status_code == 302, response.content[:2000]
    line.refresh_from_db()
    assert line.length_km == 0.321


def test_admin_save_of_a_transformer_with_a_wrong_voltage_is_refused(steward, grid):
    transformer = models.Transformer.objects.filter(grid=grid).first()
    data = change_form_data(transformer) | {"vn_lv_kv": "20.0"}

    response = steward.post(reverse("admin:twin_transformer_change", args=[transformer.pk]), data)

    assert b"differs by more than 10 %" in response.content
    transformer.refresh_from_db()
    assert transformer.vn_lv_kv == pytest.approx(0.4)
