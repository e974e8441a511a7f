"""The page hold: while a page is on its way through this process, ordinary work
starts nothing new.

When a critical alert fires here, the dispatcher's rounds and the outbox readers of
the ordinary lanes wait until its page is delivered, `PAGE_HOLD_S` at most, and the
hold is not taken again within as long after it: the page's flush and delivery do
not queue behind a storm's in the event loop, and nothing starves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

PAGE_HOLD_S = 0.25


class PageHold:
    def __init__(self, hold_s: float = PAGE_HOLD_S) -> None:
        self.hold_s = hold_s
        self._no_page = asyncio.Event()  # clear: a page is coming
        self._no_page.set()
        self._ends = 0.0  # monotonic

    def coming(self) -> None:
        """A critical alert just fired here: hold until its page is delivered."""
        now = time.monotonic()
        if now >= self._ends + self.hold_s:
            self._ends = now + self.hold_s
            self._no_page.clear()

    def delivered(self) -> None:
        self._ends = min(self._ends, time.monotonic())
        self._no_page.set()

    async def wait(self) -> bool:
        """Wait while a page is coming (at most until the hold ends); whether it waited."""
        left_s = self._ends - time.monotonic()
        if self._no_page.is_set() or left_s <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_page.wait(), left_s)
        return True
