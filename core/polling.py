"""One deadline-polling helper for every "ask again until it is true or time runs out" loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None],
    timeout_s: float,
    interval_s: float = 0.1,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T | None:
    """Call `probe` until it returns a truthy value and return that value; None once `timeout_s` is spent.

    `probe` runs at least once (even with a zero timeout) and a last time at the deadline; an
    exception it raises ends the wait (that is how a probe says "this will never succeed").
    The pause between calls is `interval_s`, shortened so the wait does not overrun the deadline.
    """
    deadline = clock() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        left = deadline - clock()
        if left <= 0:
            return None
        sleep(min(interval_s, left))
