"""The MQTT bridge against the local Mosquitto: messages become batches, and only stored messages are acknowledged."""

import threading
import uuid
from datetime import UTC, datetime

import pytest
from django.core.management import call_command

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
