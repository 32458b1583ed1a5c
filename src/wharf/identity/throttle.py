"""Login throttling: exponential back-off per username and per address.

From the `free_per_user`-th failure on, each failure locks the username (and, with a higher
allowance because offices share addresses, the address) for twice as long as the last, up to a
ceiling. While locked, every attempt gets the same 429 without its password being checked,
whether the user exists or not, so neither the answer nor its timing tells who exists. A
success clears the username's count but not the address's: otherwise one account of an
attacker's own would reset the count between guesses at others. Counts are forgotten after a
quiet period, and at most `capacity` keys are kept, so a flood of made-up names cannot grow the
process; the oldest keys that are neither locked nor awaiting an answer go first, so the same
flood cannot push a locked username out to unlock it.

`admit` checks and reserves in one step: attempts still being checked count against the
allowance, so a burst of parallel guesses gets no more than the allowance either.

The counts live in each server process: with several replicas an attacker gets each
replica's allowance, still cut down exponentially.
"""

from __future__ import annotations

import ipaddress
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
    pending: int = 0  # admitted attempts not yet answered


def network_of(address: str) -> str:
    """What one client holds: an IPv6 host gets a whole /64 (a fresh address per guess would
    otherwise get a fresh allowance), an IPv4 address written as IPv6 is that IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address  # not an address (a test client): counted as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
        ip = ip.ipv4_mapped
    return str(ip)


PENDING_WAIT = 1  # seconds to tell an attempt that waits for earlier ones to be answered


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

    def admit(self, user: str, address: str) -> int:
        """0 and a reserved place if this attempt may be checked now (answer it with `failed`
        or `succeeded`), else whole seconds to wait."""
        now = self.clock()
        with self._lock:
            keys = self._keys(user, address)
            counts = [self._fresh(key, now) for key in keys]
            keyed = list(zip(keys, counts, strict=True))
            wait = max(c.locked_until - now for c in counts)
            if wait > 0:
                return max(1, math.ceil(wait))
            spent = [c.pending and c.failures + c.pending >= self.free[k[0]] for k, c in keyed]
            if any(spent):
                # The answers in flight may spend the allowance (past it: one at a time).
                return PENDING_WAIT
            for key, count in keyed:
                count.pending += 1
                count.last = now
                self._keep(key, count)
        return 0

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in self._keys(user, address):
                count = self._fresh(key, now)
                count.pending = max(0, count.pending - 1)
                count.failures += 1
                count.last = now
                over = count.failures - self.free[key[0]]
                if over >= 0:
                    count.locked_until = now + min(self.base * 2**over, self.ceiling)
                self._keep(key, count)

    def succeeded(self, user: str, address: str | None = None) -> None:
        """A right password: the username's count is cleared; the address's is not (see
        above), but the place its attempt held is given back."""
        with self._lock:
            self._counts.pop(("user", user), None)
            count = self._counts.get(("address", network_of(address or "")))
            if address is not None and count is not None:
                count.pending = max(0, count.pending - 1)

    def _keep(self, key: tuple[str, str], count: _Count) -> None:
        self._counts[key] = count
        self._counts.move_to_end(key)
        now = self.clock()
        while len(self._counts) > self.capacity:
            idle = next(
                (k for k, c in self._counts.items() if c.locked_until <= now and not c.pending),
                None,
            )
            # Everything locked or in flight: the oldest goes after all (the bound holds).
            del self._counts[idle if idle is not None else next(iter(self._counts))]

    @staticmethod
    def _keys(user: str, address: str) -> list[tuple[str, str]]:
        return [("user", user), ("address", network_of(address))]

    def _fresh(self, key: tuple[str, str], now: float) -> _Count:
        count = self._counts.get(key)
        if count is None or now - count.last > 2 * self.ceiling:
            return _Count()
        return count
