"""A local TCP fault proxy: put it between the service and the broker or Redis, then break it.

One asyncio loop on a background thread; every method is safe to call from the test thread.
Modes (each applies to open and new connections until the next call):

- :meth:`heal`: forward bytes as they come.
- :meth:`slow`: deliver every chunk ``ms`` later, in each direction, order kept.
- :meth:`black_hole`: stop delivering (like a partition that drops packets while TCP keeps
  retrying); what was held is delivered on :meth:`heal`, if the peer is still there.
- :meth:`reset`: reset open connections (RST) and reset new ones as soon as they connect.
- :meth:`down`: reset open connections and stop listening (connection refused).
- :meth:`reject_produce`: Kafka only: reset a connection when a given client (by the client
  id in the request header) sends a Produce request (api key 0); its fetches, heartbeats and
  commits pass, and so do other clients' produce requests. The service's outputs are never
  acknowledged while its input keeps flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, Literal, Self

Mode = Literal["pass", "black-hole", "reset", "down", "reject-produce"]
_PRODUCE = 0


class FaultProxy:
    """Listens on 127.0.0.1:``port`` (a free one if 0) and forwards to ``upstream``."""

    def __init__(self, upstream: tuple[str, int], port: int = 0, *, kafka: bool = False) -> None:
        self.upstream = upstream
        self.kafka = kafka
        self.mode: Mode = "pass"
        self.latency_s = 0.0
        self.reject_client = ""
        self.connections = 0
        self._sock: socket.socket | None = _bound(port)
        self.port: int = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._flowing: asyncio.Event | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        self._call(self._listen)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._shutdown)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()

    def heal(self) -> None:
        self._set("pass", 0.0)

    def slow(self, ms: float) -> None:
        self._set("pass", ms / 1000)

    def black_hole(self) -> None:
        self._set("black-hole", self.latency_s)

    def reset(self) -> None:
        self._set("reset", 0.0)

    def down(self) -> None:
        self._set("down", 0.0)

    def reject_produce(self, client_id: str) -> None:
        """Reset any connection on which client ``client_id`` sends a Produce request."""
        assert self.kafka, "reject_produce needs a proxy made with kafka=True"
        self.reject_client = client_id
        self._set("reject-produce", 0.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _set(self, mode: Mode, latency_s: float) -> None:
        async def apply() -> None:
            self.mode, self.latency_s = mode, latency_s
            assert self._flowing is not None
            if mode == "black-hole":
                self._flowing.clear()
            else:
                self._flowing.set()
            if mode in ("reset", "down"):
                for link in list(self._links):
                    link.abort()
            if mode == "down" and self._server is not None:
                self._server.close()
                self._server = None
            elif mode != "down" and self._server is None:
                await self._listen()

        self._call(apply)

    def _call(self, fn: Callable[[], Awaitable[None]]) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(fn(), self._loop)  # type: ignore[arg-type]
        future.result(10)

    async def _listen(self) -> None:
        if self._flowing is None:
            self._flowing = asyncio.Event()
            self._flowing.set()
        sock, self._sock = self._sock or _bound(self.port), None
        self._server = await asyncio.start_server(self._accept, sock=sock)

    async def _shutdown(self) -> None:
        for link in list(self._links):
            link.abort()
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode in ("reset", "down"):
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(writer)
            return
        link = _Link(self, writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(link.pump(reader, up_writer, client=True),
                                 link.pump(up_reader, writer, client=False))
        finally:
            self._links.discard(link)
            link.abort()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: FaultProxy, client: asyncio.StreamWriter,
                 upstream: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.writers = (client, upstream)
        self.requests = _Requests()
        self.closed = False

    def abort(self) -> None:
        self.closed = True
        for writer in self.writers:
            _abort(writer)

    def _rejects(self, data: bytes) -> bool:
        requests = self.requests.feed(data)
        return self.proxy.mode == "reject-produce" and (
            (_PRODUCE, self.proxy.reject_client) in requests)

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                   client: bool) -> None:
        """Read chunks, stamp each with its due time, and deliver them in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            flowing = self.proxy._flowing
            assert flowing is not None
            while (item := await queue.get()) is not None:
                due, data = item
                await flowing.wait()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                if client and self.proxy.kafka and self._rejects(data):
                    self.abort()
                    break
                queue.put_nowait((loop.time() + self.proxy.latency_s, data))
        except OSError:
            pass
        finally:
            queue.put_nowait(None)
            if self.closed:
                sender.cancel()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await sender
            self.abort()


class _Requests:
    """Follows a client's Kafka byte stream: (api key, client id) of each request that starts.

    A request is a 4-byte size, then a header: api key, api version, correlation id (2, 2, 4
    bytes) and the client id (a 2-byte length, then the bytes).
    """

    def __init__(self) -> None:
        self.skip = 0
        self.head = b""

    def feed(self, data: bytes) -> list[tuple[int, str]]:
        found, i = [], 0
        while i < len(data):
            if self.skip:
                step = min(self.skip, len(data) - i)
                self.skip -= step
                i += step
                continue
            take = data[i:i + self._header_size() - len(self.head)]
            self.head += take
            i += len(take)
            if len(self.head) == self._header_size():
                size, key = struct.unpack(">ih", self.head[:6])
                found.append((key, self.head[14:].decode(errors="replace")))
                self.skip, self.head = size - (len(self.head) - 4), b""
        return found

    def _header_size(self) -> int:
        """14 bytes up to the client id's length, then the client id."""
        if len(self.head) < 14:
            return 14
        return 14 + max(int(struct.unpack(">h", self.head[12:14])[0]), 0)


def _bound(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), so the peer sees a reset rather than an orderly close."""
    sock: Any = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
