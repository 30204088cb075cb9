"""systemd's notify protocol for ``roadsign-agent run``: ready, watchdog pings, stopping.

The unit (deploy/device/roadsign-agent.service) is ``Type=notify`` with ``WatchdogSec=``: systemd
starts the next unit only once the model is loaded, and restarts the agent when its frame loop
stops turning. The protocol is one datagram per state on the socket ``$NOTIFY_SOCKET`` names, so
it needs no library (python-systemd is not on PyPI as a wheel for every board). Outside systemd
the variables are unset and every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping


class ServiceNotifier:
    """Sends the agent's states to systemd; a watchdog ping at most every half period."""

    def __init__(
        self,
        socket_path: str | None,
        *,
        watchdog_s: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # A leading '@' names an abstract socket: a NUL byte on the wire.
        self._address = (
            "\0" + socket_path[1:] if socket_path and socket_path[0] == "@" else socket_path
        )
        self._interval = watchdog_s / 2 if watchdog_s else None
        self._clock = clock
        self._last_ping: float | None = None

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> ServiceNotifier:
        """The notifier systemd's variables describe (a no-op one when they are unset).

        ``WATCHDOG_PID`` set to another process means the watchdog is not this one's to feed.
        """
        watchdog_s = None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog_s = int(usec) / 1_000_000
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_s=watchdog_s)

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to notify."""
        return self._address is not None

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # A lost notification must not stop the frame loop: systemd then acts on the
            # missing ping, which is what the watchdog is for.
            try:
                sock.sendto(message.encode(), self._address)
            except OSError:
                return

    def ready(self) -> None:
        """The model is loaded and the frame loop starts."""
        self._send("READY=1")

    def stopping(self) -> None:
        """A clean stop began (flushing the outbox)."""
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        """The frame loop turned; pinged on to systemd once per half watchdog period."""
        if self._interval is None:
            return
        now = self._clock()
        if self._last_ping is None or now - self._last_ping >= self._interval:
            self._last_ping = now
            self._send("WATCHDOG=1")
