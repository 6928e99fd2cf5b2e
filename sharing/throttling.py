"""Per-principal request rates: one throttle for every API view, keyed on who acts, not on where the request came from.

A principal (sharing.principals) is a participant acting through one credential: each credential of a participant
(a token, a gateway key, an API client, a member's session) has its own budget, so one runaway script does not lock
its colleagues out, and many addresses do not multiply one credential's budget. A request past the rate is answered
429 with `Retry-After` (seconds) in the project's error shape (`reason: throttled`).

The rates are read from `GRIDTWIN_THROTTLE_RATES` at each request ("<n>/<second|minute|hour|day>", or None for no
limit; scopes `principal` and `gateway`, the latter for telemetry gateways whose batches are large and few), so a test
or a deployment changes them without redefining views. The counts live in the `throttle` cache (config/settings:
Redis shared by every web worker in production, in-process memory otherwise). Windows are fixed (one counter per
principal and window, an atomic increment): a burst across a window's edge can reach twice the rate for a moment.
"""

import math
import time

from django.conf import settings
from django.core.cache import caches
from rest_framework.throttling import BaseThrottle

from sharing.principals import GATEWAY, principal_of

PERIODS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """"1200/minute" → (1200, 60): requests allowed per window of that many seconds; None for no limit."""
    if not rate:
        return None
    count, period = rate.split("/")
    return int(count), PERIODS_S[period.strip()[0]]


class PrincipalRateThrottle(BaseThrottle):
    """Counts a principal's requests per fixed window (one atomic increment per request, shared by every web worker
    through the cache); anonymous requests are counted per client address."""

    def __init__(self):
        self.retry_after_s: float | None = None

    def allow_request(self, request, view) -> bool:
        principal = principal_of(request)
        scope = "gateway" if principal.has(GATEWAY) else "principal"
        limit = parse_rate(settings.GRIDTWIN_THROTTLE_RATES.get(scope))
        if limit is None:
            return True
        allowed, window_s = limit
        now = time.time()
        window = int(now // window_s)
        key = f"gridtwin:throttle:{scope}:{self._who(request, principal)}:{window}"
        cache = caches["throttle"]
        cache.add(key, 0, timeout=window_s + 1)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr: this request opens the window
            cache.add(key, 1, timeout=window_s + 1)
            count = 1
        if count <= allowed:
            return True
        self.retry_after_s = (window + 1) * window_s - now
        return False

    def wait(self) -> float | None:
        return math.ceil(self.retry_after_s) if self.retry_after_s is not None else None

    def _who(self, request, principal) -> str:
        if principal.participant is None and principal.user is None:
            return f"anonymous:{self.get_ident(request)}"
        if principal.credential_id is not None:
            return f"{principal.participant_id}:{principal.credential_label}"
        return f"{principal.participant_id}:user:{getattr(principal.user, 'pk', '')}"
