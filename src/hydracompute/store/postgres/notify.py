"""PostgreSQL's ``LISTEN``/``NOTIFY`` as the change log's fast path.

Every append to the change log also sends ``NOTIFY`` on the pool's channel, delivered when
the appending transaction commits. A coordinator's :class:`ChangeListener` keeps one
connection listening on that channel and wakes its change feed at once; the feed then reads
the log, which stays the source of truth. A lost notification, or a listening connection
that broke, costs at most one polling period (:mod:`hydracompute.coordinator.changes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("hydracompute.store")


def channel_of(schema: str) -> str:
    """The notification channel of the pool kept in ``schema`` (channels are per database,
    and at most 63 bytes long: a schema's name may be that long on its own)."""
    return "hydracompute_" + hashlib.sha256(schema.encode()).hexdigest()[:16]


class ChangeListener:
    """A ``wait(period_s)`` that returns as soon as another connection committed a change,
    or after ``period_s`` at the latest. It runs on the coordinator's event loop; its
    connection is opened at the first wait and opened again after a failure."""

    def __init__(self, conninfo: str, schema: str) -> None:
        self.conninfo = conninfo
        self.channel = channel_of(schema)
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Set once the connection listens (changes committed before may not wake a wait).
        self.listening: asyncio.Event | None = None

    async def __call__(self, period_s: float) -> None:
        if self._event is None:
            self._event, self.listening = asyncio.Event(), asyncio.Event()
        if self._task is None or self._task.done():
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._listen(self._event))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), period_s)
        self._event.clear()

    async def _listen(self, event: asyncio.Event) -> None:
        try:
            conn: psycopg.AsyncConnection[Any] = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True
            )
            async with conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                if self.listening is not None:
                    self.listening.set()
                async for _ in conn.notifies():
                    event.set()
        except psycopg.Error as exc:  # the feed polls meanwhile; the next wait reconnects
            log.debug("change notifications stopped: %s", exc)

    def close(self) -> None:
        """Stop listening (from any thread: the backend is closed on the store's)."""
        if self._task is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
