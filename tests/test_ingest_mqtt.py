"""The MQTT bridge against the local Mosquitto: messages become batches, and only stored messages are acknowledged."""

import io
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connections

from ingest import services
from ingest.testing import metered_grid_create, power_readings, readings_json
from twin import models

# The bridge stores messages from paho's network thread, on its own database connection: the test data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

BROKER = ("127.0.0.1", 1883)


def mqtt_client(client_id: str = "", clean_session: bool = True):
    mqtt = pytest.importorskip("paho.mqtt.client")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311)
    try:
        client.connect(*BROKER)
    except OSError:
        pytest.skip("no MQTT broker on 127.0.0.1:1883")
    return client


@pytest.fixture
def session():
    """A persistent session of the bridge's client id, subscribed, so the broker keeps messages while the bridge is down."""
    client_id, prefix = f"bridge-{uuid.uuid4().hex[:8]}", f"gt-test-{uuid.uuid4().hex[:8]}/telemetry"
    client, subscribed = mqtt_client(client_id, clean_session=False), threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.loop_start()
    client.subscribe(f"{prefix}/+/+", qos=1)
    assert subscribed.wait(5)
    client.disconnect()
    client.loop_stop()
    yield client_id, prefix
    mqtt_client(client_id, clean_session=True).disconnect()  # forget the session on the broker


def publish(*messages: tuple[str, bytes]) -> None:
    client = mqtt_client()
    client.loop_start()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def bridge(client_id: str, prefix: str, **stop_when) -> None:
    call_command("mqtt_ingest", topic=f"{prefix}/+/+", client_id=client_id, **stop_when)


def test_messages_become_batches_once_and_unacknowledged_ones_come_again(utility, session):
    client_id, prefix = session
    grid = metered_grid_create(utility, name="mqtt", feeders=1, meters_per_feeder=3)
    services.telemetry_source_issue(participant=utility, name="gw-mqtt")
    readings = power_readings(list(grid.meters.values_list("id", flat=True)), datetime(2024, 5, 1, tzinfo=UTC), 2)
    publish((f"{prefix}/gw-mqtt/json", readings_json(readings)),
            (f"{prefix}/gw-mqtt/csv", b"point;ts\n1;2"),
            (f"{prefix}/nobody/json", readings_json(readings)),
            (f"{prefix}/gw-mqtt/json", readings_json(readings[:1])),
            (f"{prefix}/gw-mqtt/json", readings_json(readings[:2])))

    bridge(client_id, prefix, max_messages=4)  # the fifth is not acknowledged, whether or not it was delivered
    batches = list(models.TelemetryBatch.objects.order_by("id"))
    assert [(b.channel, b.status, b.received_count) for b in batches] == [("mqtt", "queued", 6), ("mqtt", "failed", 0),
                                                                          ("mqtt", "queued", 1)]
    assert batches[1].error.startswith("malformed_csv")

    bridge(client_id, prefix, exit_when_idle=1.5)  # a new session gets what was not acknowledged; redeliveries change nothing
    batches = list(models.TelemetryBatch.objects.order_by("id"))
    assert [b.received_count for b in batches] == [6, 0, 1, 2]
    services.telemetry_batch_process(batch_id=batches[0].pk)
    assert models.Reading.objects.count() == 6


def test_a_full_backlog_pauses_the_bridge_unacknowledged_and_it_resumes_when_the_workers_catch_up(utility, session, settings):
    settings.GRIDTWIN_INGEST_MAX_QUEUED_BATCHES = 2
    settings.CELERY_TASK_ALWAYS_EAGER = False  # the batches stay queued, as behind busy workers
    client_id, prefix = session
    grid = metered_grid_create(utility, name="mqtt-pressure", feeders=1, meters_per_feeder=3)
    services.telemetry_source_issue(participant=utility, name="gw-mqtt")
    points = list(grid.meters.values_list("id", flat=True))
    day = datetime(2024, 5, 1, tzinfo=UTC)
    publish(*[(f"{prefix}/gw-mqtt/json", readings_json(power_readings(points, day + timedelta(days=k), 1))) for k in range(5)])

    log = io.StringIO()

    def run_bridge():
        try:
            call_command("mqtt_ingest", topic=f"{prefix}/+/+", client_id=client_id, max_messages=5, exit_when_idle=20, stderr=log,
                         stdout=io.StringIO())
        finally:
            connections.close_all()

    runner = threading.Thread(target=run_bridge)
    runner.start()
    batches = models.TelemetryBatch.objects
    deadline = time.monotonic() + 15
    while "paused" not in log.getvalue() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # paused: the three other messages are waiting on the broker, not in the hub
    assert "paused" in log.getvalue() and batches.count() == 2 == batches.filter(status="queued").count()

    deadline = time.monotonic() + 45
    while runner.is_alive() and time.monotonic() < deadline:  # the workers catch up: the bridge resumes, pauses again …
        for pk in batches.filter(status="queued").values_list("pk", flat=True):
            services.telemetry_batch_process(batch_id=pk)
        time.sleep(0.3)
    runner.join(5)
    assert not runner.is_alive() and "resumed" in log.getvalue()
    for pk in batches.filter(status="queued").values_list("pk", flat=True):
        services.telemetry_batch_process(batch_id=pk)
    assert batches.count() == 5 and set(batches.values_list("status", flat=True)) == {"succeeded"}
    assert models.Reading.objects.count() == 5 * len(points)  # every message stored once: none dropped, none twice
