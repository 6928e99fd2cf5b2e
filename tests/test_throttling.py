"""Per-principal throttling: past its rate a credential gets 429 with Retry-After; other credentials keep theirs.

The suite runs without rates (config/settings/test.py); these tests set low ones and a fixed clock, so a window
never rolls over in the middle of a test.
"""

import types

import pytest
from django.core.cache import caches
from django.test import override_settings

from sharing import throttling
from tests.conftest import token_client

pytestmark = pytest.mark.django_db

NOW = 1_800_000_010.0  # 10 s into a minute


@pytest.fixture
def clock(monkeypatch):
    caches["throttle"].clear()
    now = types.SimpleNamespace(value=NOW)
    monkeypatch.setattr(throttling, "time", types.SimpleNamespace(time=lambda: now.value))
    yield now
    caches["throttle"].clear()


@override_settings(GRIDTWIN_THROTTLE_RATES={"principal": "3/minute", "gateway": None})
def test_a_credential_past_its_rate_gets_429_with_retry_after_and_others_keep_their_budget(operator, other_operator, utility, clock):
    assert [operator.get("/api/v1/grids/").status_code for _ in range(3)] == [200, 200, 200]
    refused = operator.get("/api/v1/grids/")
    assert refused.status_code == 429
    assert refused.json()["reason"] == "throttled"
    assert refused["Retry-After"] == "50"  # the rest of the minute
    # another credential of the same participant, and another participant, have budgets of their own
    colleague = token_client(utility.members.get(username="operator"), utility)
    assert colleague.get("/api/v1/grids/").status_code == 200
    assert other_operator.get("/api/v1/grids/").status_code == 200
    clock.value += 50  # the next window
    assert operator.get("/api/v1/grids/").status_code == 200


@override_settings(GRIDTWIN_THROTTLE_RATES={"principal": None, "gateway": None})
def test_no_rate_means_no_limit(operator, clock):
    assert {operator.get("/api/v1/grids/").status_code for _ in range(20)} == {200}


DEAD_REDIS = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
              "throttle": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}}


@override_settings(GRIDTWIN_THROTTLE_RATES={"principal": "3/minute", "gateway": None}, CACHES=DEAD_REDIS)
def test_an_unreachable_throttle_store_is_503_with_retry_after_not_a_server_error(operator):
    """Redis restarting (found by tests/chaos.py: every request answered 500 meanwhile) is an outage the client may retry."""
    response = operator.get("/api/v1/grids/")
    assert response.status_code == 503
    assert response.json()["reason"] == "unavailable"
    assert response["Retry-After"] == "5"
