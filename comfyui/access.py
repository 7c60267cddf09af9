"""Who may call the worker: API keys (constant-time) and a per-key rate limit."""

from __future__ import annotations

import hashlib
import hmac
import time

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.requests import HTTPConnection

from comfyui.exceptions import TooManyRequestsError, UnauthorizedError

#: Paths anyone may call: liveness must answer even when keys are misconfigured.
OPEN_PATHS = frozenset({"/health"})


class ApiKeys:
    """The configured keys; a request presents one as `Authorization: Bearer` or `X-API-Key`."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [key.encode() for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, connection: HTTPConnection) -> str | None:
        """A short fingerprint of the presented key, or None when keys are off.

        Raises `UnauthorizedError` when keys are on and none of them was presented.
        """
        if not self._keys:
            return None
        presented = _presented_key(connection)
        if presented is not None:
            candidate = presented.encode()
            # Compare with every key, always: the time taken says nothing about which matched.
            matches = [hmac.compare_digest(candidate, key) for key in self._keys]
            if any(matches):
                return hashlib.sha256(candidate).hexdigest()[:12]
        raise UnauthorizedError()


def _presented_key(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return connection.headers.get("x-api-key") or None


class RateLimiter:
    """At most `per_minute` calls a minute per caller (moving window); 0 turns it off."""

    def __init__(self, per_minute: int) -> None:
        self._item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, caller: str) -> None:
        if self._item is None:
            return
        if not self._limiter.hit(self._item, caller):
            reset = self._limiter.get_window_stats(self._item, caller).reset_time
            raise TooManyRequestsError(
                f"rate limit of {self._item.amount} a minute reached (RATE_LIMIT_PER_MINUTE)",
                retry_after=int(reset - time.time()) + 1,
            )
