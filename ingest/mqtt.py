"""MQTT messages → telemetry batches: one message is one batch, in the same formats as the HTTP API.

Topic: `<prefix>/<source name>/<format>`, e.g. `gridtwin/telemetry/gw-nord-17/json`, format one of
json, csv, senml. The broker authenticates publishers; its ACL must let a gateway publish only under
its own source name (Mosquitto: `pattern write gridtwin/telemetry/%u/#`), since the topic is what
names the source here.

Back-pressure: while the workers' backlog is at its bound (`services.telemetry_backlog_full`, the same rule that
answers 503 to an HTTP upload), a message is neither stored nor acknowledged (`BacklogFull`); the bridge stops
consuming until there is room again, and the broker keeps what was not acknowledged (QoS 1, the bridge's persistent
session) and delivers it again then. The backlog waits on the broker instead of growing in the hub: size the
broker's queue for the session (Mosquitto `max_queued_messages`, `max_queued_bytes`) for the longest overload the
gateways should not have to buffer themselves.
"""

from __future__ import annotations

import hashlib
import logging

from django.conf import settings

from ingest import services
from ingest.payloads import CSV, JSON, SENML, PayloadError
from twin import models

logger = logging.getLogger(__name__)
TOPIC_FORMATS = {"json": JSON, "csv": CSV, "senml": SENML}


class BacklogFull(RuntimeError):
    """The workers' backlog is at its bound: the message was not stored, and must not be acknowledged."""


def mqtt_backlog_has_room() -> bool:
    """Whether the bridge may consume again (the HTTP edge's rule: `services.telemetry_backlog_full`)."""
    return not services.telemetry_backlog_full()


def mqtt_message_ingest(*, topic: str, payload: bytes) -> str:
    """Store one message durably as a batch (queued, or failed with the reason when it cannot be read).

    Returns what was done, for the log. A message from an unknown or revoked source is dropped (there
    is no participant to keep it for). Raises BacklogFull (nothing stored) while the workers' backlog is full.
    Database errors propagate: the caller must then not acknowledge.
    """
    if not topic.isprintable():  # NUL and control characters: no source is named so (MQTT forbids U+0000; PostgreSQL refuses it)
        return f"dropped {topic!r}: a topic holding control characters"
    parts = topic.rsplit("/", 2)
    if len(parts) != 3:
        return f"dropped {topic}: not <prefix>/<source>/<format>"
    _, source_name, format_name = parts
    source = models.TelemetrySource.objects.select_related("credential").filter(name=source_name).first()
    if source is None or source.revoked:
        return f"dropped {topic}: no active telemetry source {source_name!r}"
    if not mqtt_backlog_has_room():
        raise BacklogFull(f"the workers' backlog is full ({settings.GRIDTWIN_INGEST_MAX_QUEUED_BATCHES} batches queued)")
    content_type = TOPIC_FORMATS.get(format_name)
    # QoS 1 is at least once: a message whose acknowledgement was lost comes again. Its content is its
    # identity (the same readings again are duplicates anyway), so a redelivery finds the first batch.
    key = f"mqtt-sha256-{hashlib.sha256(payload).hexdigest()}"
    try:
        if content_type is None:
            raise PayloadError("unsupported_media_type", f"unknown format {format_name!r}; use one of {', '.join(TOPIC_FORMATS)}")
        receipt = services.telemetry_batch_receive(source=source, body=payload, content_type=content_type, channel="mqtt",
                                                   idempotency_key=key)
    except PayloadError as exc:
        batch = services.telemetry_batch_record_unreadable(source=source, body=payload, content_type=content_type or format_name,
                                                          error=exc, channel="mqtt", idempotency_key=key)
        return f"batch {batch.pk} failed: {exc.reason}: {exc.message}"
    return f"batch {receipt.batch.pk} {'queued' if receipt.created else 'seen before'} ({receipt.batch.received_count} readings)"
