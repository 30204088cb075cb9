"""One follower of new readings per API process, fanned out to every open live-feed stream.

A `ReadingFeed` per stream cost a PostgreSQL connection per open browser tab: about 80 tabs, or
one reader token opening streams in a loop, used up the server's connections and left ingest and
the API without. Here one source (opened when the first stream comes, closed at shutdown) is read
by one task that hands each batch of ids to every subscription. The task never waits for a
subscriber: a subscription whose client does not keep up is ended once its backlog passes
`BACKLOG_IDS` (its stream ends; its client reconnects and starts afresh), so one slow client
cannot make the others, or the database's notification queue, wait, nor hold more than that in
memory. How many subscriptions a process holds open at once is capped
(``http.max_live_streams``); each holds its place until its stream closes it.

A lost source ends every subscription, since readings committed while it was away were not
seen: each stream then ends, its client reconnects, and the first subscription after the loss
opens a new source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from fleet_server.exceptions import LiveFeedError, LiveFeedFullError, StorageError

log = logging.getLogger(__name__)

BACKLOG_IDS = 10_000
"""Most ids a subscription may have waiting before it is ended as too slow: about two seconds of
the benchmark's 6,000 readings/s, about 400 KB; a browser that far behind is no longer live."""
IDLE_S = 5.0
"""How long the follower waits for ids before asking its source again (the sources' timeout)."""


class ReadingFeed(Protocol):
    """Ids of readings as they commit, from the moment `open` returns: one backend per database."""

    async def open(self) -> None:
        """Start following; every reading committed from now on will be reported."""

    async def next_ids(self, timeout: float) -> list[int]:
        """Ids committed since the last call, in commit order; [] after `timeout` s of none.

        Raises `StorageError` when the database is lost: what committed meanwhile is not seen.
        """

    async def close(self) -> None:
        """Stop following and release the connection."""


class Subscription:
    """One stream's share of the feed: the ids committed since it subscribed, in commit order."""

    def __init__(self, feed: LiveFeed) -> None:
        self._feed = feed
        self._ids: list[int] = []
        self._wake = asyncio.Event()
        self._ended: str | None = None

    def _offer(self, ids: list[int]) -> None:
        if self._ended is not None:
            return
        if len(self._ids) + len(ids) > BACKLOG_IDS:
            self._ids = []  # it is ended for being behind: what it missed cannot be sent anyway
            self._end(f"the client fell more than {BACKLOG_IDS} readings behind")
            return
        self._ids.extend(ids)
        self._wake.set()

    def _end(self, reason: str) -> None:
        if self._ended is None:
            self._ended = reason
        self._wake.set()

    async def next_ids(self, timeout: float) -> list[int]:
        """Ids committed since the last call, in commit order; [] after `timeout` s of none.

        Raises `LiveFeedError` once the subscription has ended (after handing over what it had,
        unless it ended for falling behind).
        """
        if not self._ids and self._ended is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()
        if self._ids:
            ids, self._ids = self._ids, []
            return ids
        if self._ended is not None:
            raise LiveFeedError(self._ended)
        return []

    def close(self) -> None:
        """Leave the feed (idempotent): its place under the cap is free again.

        An ended subscription keeps its place until then: the cap counts the streams a process
        holds open, and a stream whose client stopped reading is held until its send fails.
        """
        self._end("closed")
        self._feed._forget(self)


class LiveFeed:
    """The process's one follower of `source`, shared by at most `max_streams` subscriptions."""

    def __init__(self, source: Callable[[], ReadingFeed], *, max_streams: int) -> None:
        self._make_source = source
        self._max_streams = max_streams
        self._subscriptions: set[Subscription] = set()
        self._source: ReadingFeed | None = None  # open, until released
        self._follower: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()  # one connection attempt at a time, however many wait
        self._closed = False

    @property
    def open_streams(self) -> int:
        """Subscriptions open now."""
        return len(self._subscriptions)

    async def subscribe(self) -> Subscription:
        """A subscription that gets every id committed from now on (the source opened if none is).

        Raises `LiveFeedFullError` at the cap, `LiveFeedError` once closed, `StorageError` when the
        source cannot be opened.
        """
        if self._closed:
            raise LiveFeedError("the server is shutting down")
        if len(self._subscriptions) >= self._max_streams:
            raise LiveFeedFullError(f"{self._max_streams} live streams are open, the most allowed")
        # Counted from here, so that streams racing for the last place cannot pass the cap.
        subscription = Subscription(self)
        self._subscriptions.add(subscription)
        try:
            await self._follow()
        except BaseException:
            subscription.close()
            raise
        return subscription

    async def _follow(self) -> None:
        async with self._opening:
            if self._follower is not None:
                return
            if self._closed:
                raise LiveFeedError("the server is shutting down")
            source = self._make_source()
            await source.open()
            if self._closed:  # closed while this one was connecting
                await source.close()
                raise LiveFeedError("the server is shutting down")
            self._source = source
            self._follower = asyncio.create_task(self._pump(source), name="live-feed")

    async def _pump(self, source: ReadingFeed) -> None:
        reason = "the live feed stopped"
        try:
            while True:
                ids = await source.next_ids(timeout=IDLE_S)
                if ids:
                    for subscription in self._subscriptions:  # no await: the set holds still
                        subscription._offer(ids)
        except StorageError as e:
            log.warning("the live feed lost the database; its streams end and reconnect: %s", e)
            reason = str(e)
        except Exception:  # the follower must end its streams whatever happened
            log.exception("the live feed failed; its streams end and reconnect")
            reason = "the live feed failed"
        finally:
            # Gone before anything is awaited: a subscription from now on opens a new source
            # instead of waiting on this one, which reports nothing more.
            if self._follower is asyncio.current_task():
                self._follower = None
            self._end_all(reason)
            await self._release(source)

    def _end_all(self, reason: str) -> None:
        for subscription in self._subscriptions:
            subscription._end(reason)

    async def _release(self, source: ReadingFeed) -> None:
        if self._source is source:  # once, whether the follower or `close` gets here first
            self._source = None
            await source.close()

    def _forget(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    async def close(self) -> None:
        """End every subscription and close the source (at the app's shutdown)."""
        self._closed = True
        self._end_all("the server is shutting down")
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            await asyncio.wait([follower])
        if self._source is not None:  # a follower cancelled before it ran released nothing
            await self._release(self._source)
