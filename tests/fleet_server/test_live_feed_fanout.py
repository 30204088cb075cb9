"""The live feed's fan-out (`fleet_server.live_feed.fanout`): one source, every subscription.

Unit tests on a source of our own (`ReadingFeed` is our interface) that reports what the test
puts in; the feed on a real PostgreSQL and HTTP is in test_live_feed.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from fleet_server.exceptions import LiveFeedError, LiveFeedFullError, StorageError
from fleet_server.live_feed.fanout import BACKLOG_IDS, LiveFeed, Subscription


class ScriptedSource:
    """A `ReadingFeed` reporting the id lists (or raising the errors) put into `reports`."""

    def __init__(self, log: list[str], refusal: StorageError | None) -> None:
        self.reports: asyncio.Queue[list[int] | StorageError] = asyncio.Queue()
        self.log = log
        self.refusal = refusal
        self.closable = asyncio.Event()  # close() returns once set (a connection slow to close)
        self.closable.set()

    async def open(self) -> None:
        if self.refusal is not None:
            raise self.refusal
        self.log.append("open")

    async def next_ids(self, timeout: float) -> list[int]:
        try:
            report = await asyncio.wait_for(self.reports.get(), timeout)
        except TimeoutError:
            return []
        if isinstance(report, StorageError):
            raise report
        return report

    async def close(self) -> None:
        self.log.append("close")
        await self.closable.wait()


class Rig:
    """A `LiveFeed` on `ScriptedSource`s; `source` is the one opened last."""

    def __init__(self, max_streams: int = 10) -> None:
        self.log: list[str] = []
        self.sources: list[ScriptedSource] = []
        self.refusal: StorageError | None = None  # what opening the next source raises
        self.feed = LiveFeed(self._make, max_streams=max_streams)

    def _make(self) -> ScriptedSource:
        self.sources.append(ScriptedSource(self.log, self.refusal))
        return self.sources[-1]

    @property
    def source(self) -> ScriptedSource:
        return self.sources[-1]


def run(scenario: Callable[[Rig], Awaitable[None]], **options: int) -> Rig:
    rig = Rig(**options)

    async def main() -> None:
        try:
            await asyncio.wait_for(scenario(rig), 10)
        finally:
            await rig.feed.close()

    asyncio.run(main())
    return rig


async def drain(subscription: Subscription) -> list[int]:
    """Every id the subscription has now (each `next_ids` call hands over what arrived)."""
    ids: list[int] = []
    while batch := await subscription.next_ids(timeout=0.05):
        ids += batch
    return ids


def test_every_subscription_gets_every_id_in_order_through_one_opened_source() -> None:
    async def scenario(rig: Rig) -> None:
        first, second = await rig.feed.subscribe(), await rig.feed.subscribe()
        rig.source.reports.put_nowait([3, 1])
        rig.source.reports.put_nowait([2])
        assert await drain(first) == [3, 1, 2]
        assert await drain(second) == [3, 1, 2]
        assert await first.next_ids(timeout=0.01) == []

    rig = run(scenario)
    assert rig.log == ["open", "close"]  # one source, however many subscriptions


def test_a_subscription_that_falls_behind_is_ended_and_the_others_get_everything() -> None:
    async def scenario(rig: Rig) -> None:
        slow, keeping_up = await rig.feed.subscribe(), await rig.feed.subscribe()
        sent: list[int] = []
        received: list[int] = []
        for start in range(0, BACKLOG_IDS + 1000, 500):
            batch = list(range(start, start + 500))
            sent += batch
            rig.source.reports.put_nowait(batch)
            received += await keeping_up.next_ids(timeout=5)
        assert received == sent
        with pytest.raises(LiveFeedError, match="fell more than"):
            await slow.next_ids(timeout=5)
        assert rig.feed.open_streams == 2  # until its stream, ending, closes it
        slow.close()
        assert rig.feed.open_streams == 1

    run(scenario)


def test_the_subscription_past_the_cap_is_refused_until_one_closes() -> None:
    async def scenario(rig: Rig) -> None:
        first = await rig.feed.subscribe()
        await rig.feed.subscribe()
        with pytest.raises(LiveFeedFullError):
            await rig.feed.subscribe()
        first.close()
        first.close()  # a second close gives back nothing more
        third = await rig.feed.subscribe()
        with pytest.raises(LiveFeedFullError):
            await rig.feed.subscribe()
        rig.source.reports.put_nowait([7])
        assert await drain(third) == [7]

    run(scenario, max_streams=2)


def test_a_lost_source_ends_every_subscription_and_the_next_one_opens_a_new_source() -> None:
    async def scenario(rig: Rig) -> None:
        first, second = await rig.feed.subscribe(), await rig.feed.subscribe()
        rig.source.reports.put_nowait([1])
        rig.source.reports.put_nowait(StorageError("connection lost"))
        for subscription in (first, second):
            assert await subscription.next_ids(timeout=5) == [1]  # what it had comes first
            with pytest.raises(LiveFeedError, match="connection lost"):
                await subscription.next_ids(timeout=5)
            subscription.close()  # as its stream does, ending
        assert rig.feed.open_streams == 0
        again = await rig.feed.subscribe()
        rig.source.reports.put_nowait([2])
        assert await drain(again) == [2]

    rig = run(scenario)
    assert rig.log == ["open", "close", "open", "close"]


def test_a_subscription_while_a_lost_source_is_still_closing_gets_a_new_source() -> None:
    async def scenario(rig: Rig) -> None:
        first = await rig.feed.subscribe()
        lost = rig.source
        lost.closable.clear()
        lost.reports.put_nowait(StorageError("connection lost"))
        with pytest.raises(LiveFeedError):
            await first.next_ids(timeout=5)
        assert rig.log == ["open", "close"]  # its close has begun and not ended
        second = await rig.feed.subscribe()
        assert rig.source is not lost
        rig.source.reports.put_nowait([9])
        assert await drain(second) == [9]
        lost.closable.set()

    rig = run(scenario)
    assert rig.log == ["open", "close", "open", "close"]


def test_closing_the_feed_ends_its_subscriptions_closes_the_source_and_refuses_new_ones() -> None:
    async def scenario(rig: Rig) -> None:
        subscription = await rig.feed.subscribe()
        await rig.feed.close()
        assert rig.log == ["open", "close"]
        with pytest.raises(LiveFeedError, match="shutting down"):
            await subscription.next_ids(timeout=5)
        with pytest.raises(LiveFeedError, match="shutting down"):
            await rig.feed.subscribe()

    run(scenario)


def test_a_source_that_cannot_open_refuses_the_subscription_and_holds_no_place() -> None:
    async def scenario(rig: Rig) -> None:
        rig.refusal = StorageError("database away")
        with pytest.raises(StorageError, match="database away"):
            await rig.feed.subscribe()
        assert rig.feed.open_streams == 0
        rig.refusal = None  # the database is back: the next subscription opens a source
        subscription = await rig.feed.subscribe()
        rig.source.reports.put_nowait([5])
        assert await drain(subscription) == [5]

    rig = run(scenario, max_streams=1)
    assert rig.log == ["open", "close"]
