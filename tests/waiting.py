"""Waiting for a condition with a deadline, instead of sleeping for a guessed time.

A fixed sleep is either too short on a loaded machine (the test fails for no reason) or too long
everywhere else; polling the condition the test needs returns as soon as it holds and fails
with a message saying what never happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 20.0, message: str = "", *, every: float = 0.05
) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    Raises AssertionError naming `message` (what the test waited for) if `timeout` seconds
    pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {message or predicate!r}")
        time.sleep(every)
