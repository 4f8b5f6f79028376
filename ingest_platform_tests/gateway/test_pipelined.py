"""The gateway's pipelined Redis client against a host that never answers a connect."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest

from ingest_platform.storage.pipelined import NotSent, PipelinedRedis


@contextlib.contextmanager
def blackholed_port():
    """A local port whose connects time out rather than being refused: a listener with a backlog
    of 0 that never accepts, its queue filled first. Linux then drops further SYNs silently, as a
    firewalled or vanished host does (a non-routable address is not reliably silent everywhere)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def _fail_concurrently(port: int, timeout: float, callers: int) -> tuple[list[BaseException], float]:
    async def run():
        client = PipelinedRedis("127.0.0.1", port, connect_timeout=timeout, command_timeout=timeout)
        started = time.monotonic()
        outcomes = await asyncio.gather(*(client.execute("PING") for _ in range(callers)), return_exceptions=True)
        took = time.monotonic() - started
        await client.close()
        return outcomes, took

    return asyncio.run(run())


def test_callers_queued_behind_a_connect_that_times_out_fail_with_it():
    """Eight concurrent commands to a host that swallows connects: one attempt, one timeout for all.
    Before, each waiter behind the connect lock tried again in turn: 8 timeouts for the last one."""
    timeout = 0.5
    with blackholed_port() as port:
        with pytest.raises(TimeoutError):  # the port really swallows connects (else this test proves nothing)
            socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
        outcomes, took = _fail_concurrently(port, timeout, callers=8)
    assert all(isinstance(outcome, NotSent) for outcome in outcomes), outcomes
    assert took < 3 * timeout, took  # one attempt's timeout plus slack; serialised attempts take 8


def test_a_caller_after_a_failed_connect_tries_again(own_redis):
    """Failing fast is only for the callers that waited on the failed attempt: a later caller
    connects afresh, so a Redis that is back is used at once, however recent the failure (here well
    within the connect timeout)."""
    async def run():
        client = PipelinedRedis("127.0.0.1", own_redis.port, connect_timeout=30, command_timeout=30)
        own_redis.stop(kill=True)
        try:
            with pytest.raises(NotSent):
                await client.execute("PING")  # refused: nothing listens
            own_redis.start()
            return await client.execute("PING")
        finally:
            await client.close()

    assert asyncio.run(run()) == b"PONG"
