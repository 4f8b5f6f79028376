"""A lean asyncio Redis client with automatic pipelining, for the gateway's hot path.

redis.asyncio spends about 100 us of Python per command (connection pool, command packing, a
timeout task per call), which alone would cap a gateway worker below its target. This client keeps
one connection per worker: every concurrent caller writes its command into a shared buffer that is
flushed once per event-loop iteration, and replies (parsed by hiredis) resolve the callers'
futures in order. Under load, dozens of requests share one syscall and one round trip, while each
command stays a separate, atomic command in Redis.

Failures surface as redis-py's exceptions (ConnectionError, TimeoutError, ResponseError), so
callers handle them as for redis.asyncio. Commands are never retried here: a command whose reply
was lost may have run, and retrying a non-idempotent append could store it twice. The two kinds of
failure are told apart: `NotSent` (a ConnectionError) when no connection could be made, so the
command certainly did not run; any other ConnectionError or TimeoutError once a command was
queued on a connection, when it may have run (a frozen Redis runs what it had read when it wakes).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import time
from collections.abc import Awaitable
from urllib.parse import unquote, urlparse

import hiredis
import redis.exceptions

_CRLF = b"\r\n"


class NotSent(redis.exceptions.ConnectionError):
    """No connection to Redis could be made: the command was never sent and did not run."""


def pack_command(args: tuple) -> list[bytes]:
    """The RESP encoding of one command, as pieces: payloads are not copied until the one join
    that sends every command of a loop turn (a batch's payload is tens of kilobytes)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = arg.__class__
        if kind is not bytes:
            arg = (arg.encode() if kind is str else b"%d" % arg if kind is int else repr(arg).encode() if kind is float
                   else bytes(arg))
        parts += (b"$%d\r\n" % len(arg), arg, _CRLF)
    return parts


class _Protocol(asyncio.Protocol):
    def __init__(self, client: "PipelinedRedis"):
        self.client = client
        self.reader = hiredis.Reader(replyError=redis.exceptions.ResponseError)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.client._pending
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.client._fail(redis.exceptions.ConnectionError(f"protocol error: {exc}"))
                return
            if reply is False:
                return
            if not pending:  # a reply nobody waits for: the stream is out of step
                self.client._fail(redis.exceptions.ConnectionError("unexpected reply"))
                return
            future, _ = pending.popleft()
            if not future.done():
                if isinstance(reply, redis.exceptions.ResponseError):
                    future.set_exception(_specific_error(reply))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc) -> None:
        self.client._lost(self, exc)


def _specific_error(error: redis.exceptions.ResponseError) -> Exception:
    message = str(error)
    if message.startswith("NOSCRIPT"):
        return redis.exceptions.NoScriptError(message)
    if message.startswith("LOADING"):
        return redis.exceptions.BusyLoadingError(message)
    return error


class PipelinedRedis:
    """One auto-pipelined connection; `await execute(*args)` returns the raw reply."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, db: int = 0, username: str | None = None,
                 password: str | None = None, connect_timeout: float = 1.0, command_timeout: float = 1.0):
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.connect_timeout, self.command_timeout = connect_timeout, command_timeout
        self._protocol: _Protocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Lock | None = None
        self._connect_failures = 0  # connect attempts that failed so far (see `_connect`)
        self._connect_error = ""  # why the last one failed
        self._pending: collections.deque[tuple[asyncio.Future, float]] = collections.deque()
        self._buffer: list[bytes] = []
        self._flush_scheduled = False
        self._watchdog: asyncio.Task | None = None

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "PipelinedRedis":
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", ""):
            raise ValueError(f"the pipelined client speaks plain redis:// only, not {parsed.scheme}://")
        db = int(parsed.path.lstrip("/") or 0) if parsed.path not in ("", "/") else 0
        return cls(parsed.hostname or "127.0.0.1", parsed.port or 6379, db,
                   unquote(parsed.username) if parsed.username else None,
                   unquote(parsed.password) if parsed.password else None, **kwargs)

    def execute(self, *args) -> Awaitable:
        """Queues a command; await the result for its reply. A plain function returning a future
        while connected: one coroutine less per command on the hot path."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
            return self._execute_after_connecting(args)
        loop = self._loop  # the connection's loop (asyncio.get_running_loop() costs a getpid() syscall)
        future = loop.create_future()
        self._pending.append((future, time.monotonic()))
        self._buffer += pack_command(args)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    async def _execute_after_connecting(self, args: tuple):
        try:
            await self._connect()
        except NotSent:
            raise
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise NotSent(str(exc) or type(exc).__name__) from exc  # AUTH/SELECT failed: ours not sent
        return await self.execute(*args)

    def _flush(self) -> None:
        self._flush_scheduled = False
        buffer, self._buffer = self._buffer, []
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return  # connection lost meanwhile: the pending futures were failed already
        protocol.transport.write(b"".join(buffer))

    async def _connect(self) -> _Protocol:
        """One attempt at a time; the callers that queued behind an attempt share its outcome.

        Against a blackholed host an attempt takes the whole connect timeout: were each waiter to
        try again in turn, the last of N would wait N timeouts. So a waiter that sees an attempt
        fail while it queued fails at once. A caller that arrives after the failure does try again
        (Redis may be back), so recovery is never delayed by an earlier failure."""
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        failures_before = self._connect_failures
        async with self._connecting:
            if self._protocol is not None and self._protocol.transport and not self._protocol.transport.is_closing():
                return self._protocol
            if self._connect_failures != failures_before:
                raise NotSent(f"a connect attempt failed while this one waited: {self._connect_error}")
            try:
                return await self._open_connection()
            except Exception as exc:  # not a cancellation: that says nothing about Redis
                self._connect_failures += 1
                self._connect_error = str(exc) or type(exc).__name__
                raise

    async def _open_connection(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(self), self.host, self.port), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise NotSent(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
        self._protocol, self._loop = protocol, loop
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch(), name="redis-watchdog")
        try:
            if self.password:
                auth = (self.username, self.password) if self.username else (self.password,)
                await self.execute("AUTH", *auth)
            if self.db:
                await self.execute("SELECT", self.db)
        except Exception:
            protocol.transport.close()
            raise
        return protocol

    async def _watch(self) -> None:
        """Close a connection whose oldest command waits past the timeout (one timer for all,
        checking four times per timeout: a command fails within 1.25 timeouts)."""
        while True:
            await asyncio.sleep(min(0.5, self.command_timeout / 4))
            if self._pending and time.monotonic() - self._pending[0][1] > self.command_timeout:
                self._fail(redis.exceptions.TimeoutError(f"no reply from Redis in {self.command_timeout}s"))

    def _fail(self, exc: Exception) -> None:
        protocol, self._protocol = self._protocol, None
        self._fail_pending(exc)
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()

    def _lost(self, protocol: _Protocol, exc: BaseException | None) -> None:
        if self._protocol is protocol:
            self._protocol = None
            self._fail_pending(redis.exceptions.ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def _fail_pending(self, exc: Exception) -> None:
        self._buffer.clear()
        while self._pending:
            future, _ = self._pending.popleft()
            if not future.done():
                future.set_exception(exc)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


class Script:
    """A Lua script run by EVALSHA, loaded again by EVAL when Redis has lost it (a restart)."""

    def __init__(self, client: PipelinedRedis, source: str):
        self.client = client
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest().encode()

    async def __call__(self, keys: list, args: list):
        try:
            return await self.client.execute(b"EVALSHA", self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await self.client.execute(b"EVAL", self.source, len(keys), *keys, *args)
