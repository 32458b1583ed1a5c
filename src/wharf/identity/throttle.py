"""Login throttling: exponential back-off per username and per address.

From the `free_per_user`-th failure on, each failure locks the username (and, with a higher
allowance because offices share addresses, the address) for twice as long as the last, up to a
ceiling. While locked, every attempt gets the same 429 without its password being checked,
whether the user exists or not, so neither the answer nor its timing tells who exists. A
success clears the username's count but not the address's: otherwise one account of an
attacker's own would reset the count between guesses at others. Counts are forgotten after a
quiet period, and at most `capacity` keys are kept (oldest dropped first), so a flood of
made-up names cannot grow the process.

The counts live in each server process: with several replicas an attacker gets each
replica's allowance, still cut down exponentially.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Count:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        free_per_user: int = 5,
        free_per_address: int = 20,
        base_seconds: float = 1.0,
        ceiling_seconds: float = 900.0,
        capacity: int = 10_000,
    ) -> None:
        self.clock = clock
        self.free = {"user": free_per_user, "address": free_per_address}
        self.base = base_seconds
        self.ceiling = ceiling_seconds
        self.capacity = capacity
        self._counts: OrderedDict[tuple[str, str], _Count] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, user: str, address: str) -> int:
        """Whole seconds until this user may try again from this address (0: now)."""
        now = self.clock()
        with self._lock:
            waits = [self._fresh(key, now).locked_until - now for key in self._keys(user, address)]
        return max(0, math.ceil(max(waits)))

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in self._keys(user, address):
                count = self._fresh(key, now)
                count.failures += 1
                count.last = now
                over = count.failures - self.free[key[0]]
                if over >= 0:
                    count.locked_until = now + min(self.base * 2**over, self.ceiling)
                self._counts[key] = count
                self._counts.move_to_end(key)
            while len(self._counts) > self.capacity:
                self._counts.popitem(last=False)

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._counts.pop(("user", user), None)

    @staticmethod
    def _keys(user: str, address: str) -> list[tuple[str, str]]:
        return [("user", user), ("address", address)]

    def _fresh(self, key: tuple[str, str], now: float) -> _Count:
        count = self._counts.get(key)
        if count is None or now - count.last > 2 * self.ceiling:
            return _Count()
        return count
