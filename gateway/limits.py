"""Request-rate limits (``LASTMILE_RATE_LIMIT`` requests a minute, per token and per
client address; 0 turns them off). Counted in this gateway process: behind N
gateway replicas a client may make up to N times the limit."""
import time

from lastmile import config
from lastmile.errors import LastmileError


class TooManyRequests(LastmileError):
    status = 429
    code = "too_many_requests"

    def __init__(self, retry_after):
        super().__init__("Too many requests; slow down", {"retry_after": retry_after})
        self.headers = {"Retry-After": str(retry_after)}


class FixedWindowLimiter:
    """Counts requests per key in whole-minute windows."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.windows = {}

    def check(self, key, limit):
        """Count one request; raise TooManyRequests past ``limit`` this minute."""
        if limit <= 0:
            return
        now = self.clock()
        window = int(now // 60)
        start, count = self.windows.get(key, (window, 0))
        if start != window:
            start, count = window, 0
        count += 1
        self.windows[key] = (start, count)
        if len(self.windows) > 100_000:
            self._forget_old(window)
        if count > limit:
            raise TooManyRequests(retry_after=max(1, int((window + 1) * 60 - now) + 1))

    def _forget_old(self, window):
        self.windows = {k: v for k, v in self.windows.items() if v[0] == window}


limiter = FixedWindowLimiter()


def check_rate(address, actor_id=None):
    limit = config.get_int("LASTMILE_RATE_LIMIT")
    if address:
        limiter.check(f"address:{address}", limit)
    if actor_id:
        limiter.check(f"token:{actor_id}", limit)
