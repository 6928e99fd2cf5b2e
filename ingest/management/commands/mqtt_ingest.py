"""Bridge an MQTT broker into the ingest pipeline: QoS 1, acknowledged only once the batch is durable; paused (nothing
acknowledged, the broker keeps the messages) while the workers' backlog is full."""

import os
import threading
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from ingest.mqtt import BacklogFull, mqtt_backlog_has_room, mqtt_message_ingest

WAIT_S = 0.2
PAUSE_POLL_S = 1.0  # how often a paused bridge looks at the backlog


class Command(BaseCommand):
    help = ("Subscribe to telemetry topics (<prefix>/<source>/<json|csv|senml>) and store every message as a batch; "
            "a message is acknowledged only after its batch has committed, so nothing is lost if the bridge dies.")

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("MQTT_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("MQTT_PORT", "1883")))
        parser.add_argument("--topic", default="gridtwin/telemetry/+/+", help="subscription pattern")
        parser.add_argument("--client-id", default="gridtwin-ingest",
                            help="kept across restarts: the broker holds QoS 1 messages for this session while the bridge is down")
        parser.add_argument("--username", default=os.environ.get("MQTT_USERNAME"))
        parser.add_argument("--max-messages", type=int, help="stop after this many messages")
        parser.add_argument("--exit-when-idle", type=float, metavar="SECONDS", help="stop after this long without a message (drain runs)")

    def handle(self, *args, host, port, topic, client_id, username, max_messages, exit_when_idle, **options):
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                             protocol=mqtt.MQTTv311, manual_ack=True)
        if username:
            client.username_pw_set(username, os.environ.get("MQTT_PASSWORD"))
        state = {"handled": 0, "error": None, "last_message": time.monotonic(), "paused": False}
        stop = threading.Event()

        def on_connect(client, userdata, flags, reason_code, properties):
            if reason_code.is_failure:
                state["error"] = f"broker refused the connection: {reason_code}"
                stop.set()
                return
            client.subscribe(topic, qos=1)
            self.stderr.write(f"subscribed to {topic} on {host}:{port} as {client_id}")

        def on_message(client, userdata, message):
            if stop.is_set() or state["paused"]:
                return  # not acknowledged: the broker delivers it again in the next session
            state["last_message"] = time.monotonic()
            try:
                outcome = mqtt_message_ingest(topic=message.topic, payload=message.payload)
            except BacklogFull as exc:  # stop consuming: this message and those in flight stay unacknowledged
                state["paused"] = True
                self.stderr.write(f"{exc}: paused, nothing acknowledged until the workers catch up")
                return
            except Exception as exc:  # the database is unreachable or failing: stop without acknowledging
                state["error"] = f"could not store a message of {message.topic}: {exc}"
                stop.set()
                return
            client.ack(message.mid, message.qos)
            state["handled"] += 1
            self.stdout.write(f"{message.topic}: {outcome}")
            if max_messages is not None and state["handled"] >= max_messages:
                stop.set()

        def on_disconnect(client, userdata, flags, reason_code, properties):
            connections.close_all()  # the network thread's database connection, which this thread cannot close

        client.on_connect = on_connect
        client.on_message = on_message
        client.on_disconnect = on_disconnect
        try:
            client.connect(host, port, keepalive=60)
        except OSError as exc:
            raise CommandError(f"cannot reach the MQTT broker at {host}:{port}: {exc}") from exc
        client.loop_start()  # the network thread reconnects by itself; this thread only decides when to stop
        try:
            while not stop.wait(WAIT_S):
                idle = exit_when_idle is not None and time.monotonic() - state["last_message"] > exit_when_idle
                if idle or (state["paused"] and not self.resume_when_room(client, state, exit_when_idle)):
                    break
        finally:
            client.disconnect()
            client.loop_stop()
        if state["error"]:
            raise CommandError(state["error"])

    def resume_when_room(self, client, state: dict, exit_when_idle: float | None) -> bool:
        """Leave the broker while the backlog is full (a connected client would be sent messages it may not take), come
        back once there is room; the broker delivers what was not acknowledged again. False: gave up (idle)."""
        client.disconnect()
        client.loop_stop()
        while not mqtt_backlog_has_room():
            if exit_when_idle is not None and time.monotonic() - state["last_message"] > exit_when_idle:
                return False
            time.sleep(PAUSE_POLL_S)
        state["paused"] = False
        try:
            client.reconnect()
        except OSError as exc:
            state["error"] = f"cannot reach the MQTT broker again after the pause: {exc}"
            return False
        client.loop_start()
        self.stderr.write("backlog has room again: resumed")
        return True
