"""The capacity benchmark's phase clock (bench/phases.py) charges CPU to the right phase while
tasks interleave, and a socket's answer to the phase that wrote the request."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.phases import EVENT_LOOP, PhaseClock

BURN = 0.004  # seconds of CPU a step


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class Worker:
    async def step(self, steps: int) -> None:
        for _ in range(steps):
            burn(BURN)
            await asyncio.sleep(0)  # another task runs between our steps


async def test_interleaved_tasks_are_charged_to_their_own_phase() -> None:
    clock = PhaseClock()
    step = Worker.step
    with clock.installed(), clock.patched([(Worker, ("step",), "a")]):
        a = asyncio.create_task(Worker().step(10))
        b = asyncio.create_task(clock.tagged("b", step)(Worker(), 5))
        await asyncio.gather(a, b)
    assert clock.cpu["a"] == pytest.approx(10 * BURN, rel=0.3)
    assert clock.cpu["b"] == pytest.approx(5 * BURN, rel=0.3)
    assert Worker.step is step  # unpatched again


async def test_the_answer_on_a_socket_belongs_to_the_phase_that_asked() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    class Slow(asyncio.Protocol):  # reading the answer costs CPU in the transport's callback
        def __init__(self) -> None:
            self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def data_received(self, data: bytes) -> None:
            burn(10 * BURN)
            self.done.set_result(data)

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clock = PhaseClock()
    loop = asyncio.get_running_loop()
    with clock.installed():
        transport, protocol = await loop.create_connection(Slow, "127.0.0.1", port)  # opened in "other"

        async def ask() -> bytes:
            transport.write(b"hello\n")
            return await protocol.done

        assert await clock.tagged("asking", ask)() == b"hello\n"
        transport.close()
    server.close()
    await server.wait_closed()
    assert clock.cpu["asking"] >= 10 * BURN * 0.9
    assert clock.cpu["other"] + clock.cpu[EVENT_LOOP] < 10 * BURN * 0.5
