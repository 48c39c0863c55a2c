"""The coordinator's HTTP protocol forgets each request once answered, over real loopback
connections to a real uvicorn server, and fed byte by byte where the order of arrival
matters."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from hydracompute.coordinator.protocol import HttpProtocol


class EchoApp:
    """Answers each request with its method, path and body; holds the answers while
    ``held`` is clear, and sets ``entered`` when a request reaches it."""

    def __init__(self) -> None:
        self.held = asyncio.Event()
        self.held.set()
        self.entered = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.entered.set()
        await self.held.wait()
        answer = f"{scope['method']} {scope['path']} ".encode() + body
        headers = [(b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


def request(path: str, body: bytes = b"") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


async def with_server(test: Any) -> None:
    """Run ``test(server, reader, writer)`` against a uvicorn server using HttpProtocol on
    a loopback socket, over one client connection."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    config = uvicorn.Config(EchoApp(), http=HttpProtocol, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    # The socket listens already: the connection waits in its backlog until served.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await test(server, reader, writer)
    finally:
        writer.close()
        server.should_exit = True
        await serving


def the_protocol(server: uvicorn.Server) -> HttpProtocol:
    (protocol,) = server.server_state.connections
    assert isinstance(protocol, HttpProtocol)
    return protocol


def test_an_answered_request_is_forgotten_and_the_connection_serves_the_next() -> None:
    async def test(server: uvicorn.Server, reader: Any, writer: Any) -> None:
        writer.write(request("/first", b"one"))
        assert await read_answer(reader) == b"POST /first one"
        protocol = the_protocol(server)
        assert protocol.cycle is None
        assert protocol.scope is None
        assert protocol.headers == []
        assert protocol.timeout_keep_alive_task is not None  # the connection is kept
        writer.write(request("/second", b"two"))
        assert await read_answer(reader) == b"POST /second two"
        assert the_protocol(server) is protocol
        assert protocol.cycle is None

    asyncio.run(with_server(test))


def test_pipelined_requests_are_answered_in_order() -> None:
    async def test(server: uvicorn.Server, reader: Any, writer: Any) -> None:
        writer.write(request("/a", b"1") + request("/b", b"22") + request("/c"))
        assert [await read_answer(reader) for _ in range(3)] == [
            b"POST /a 1",
            b"POST /b 22",
            b"POST /c ",
        ]
        assert the_protocol(server).cycle is None

    asyncio.run(with_server(test))


class Transport(asyncio.Transport):
    """What the protocol writes, kept; the rest of a transport, idle."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def fed_protocol(app: EchoApp) -> tuple[HttpProtocol, Transport, ServerState]:
    state = ServerState()
    config = uvicorn.Config(app, http=HttpProtocol, log_level="warning", lifespan="off")
    protocol = HttpProtocol(config, state, {})
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport, state


def test_a_request_begun_while_the_previous_is_answered_keeps_its_scope() -> None:
    async def test() -> None:
        app = EchoApp()
        protocol, transport, state = fed_protocol(app)
        app.held.clear()
        protocol.data_received(request("/first", b"one"))
        await app.entered.wait()
        # The next request's head arrives in part while the first is being answered.
        second = request("/second", b"two")
        protocol.data_received(second[:20])
        begun = protocol.scope
        app.held.set()
        await asyncio.gather(*state.tasks)
        assert transport.written.endswith(b"POST /first one")
        assert protocol.cycle is None
        assert protocol.scope is begun  # its request, still arriving
        protocol.data_received(second[20:])
        await asyncio.gather(*state.tasks)
        assert transport.written.endswith(b"POST /second two")
        assert protocol.scope is None

    asyncio.run(test())


def test_a_connection_lost_with_an_error_cancels_its_keep_alive_timer() -> None:
    async def test() -> None:
        protocol, _, state = fed_protocol(EchoApp())
        protocol.data_received(request("/only"))
        await asyncio.gather(*state.tasks)
        timer = protocol.timeout_keep_alive_task
        assert timer is not None
        protocol.connection_lost(ConnectionResetError("reset by peer"))
        # Else the loop would hold the protocol, and all it refers to, until it fired.
        assert timer.cancelled()
        assert protocol.timeout_keep_alive_task is None

    asyncio.run(test())


class EarlyAnswerApp:
    """Refuses every request at once, without reading its body (as a 401 might)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": b"no"})


def test_a_request_answered_before_its_body_arrived_keeps_the_connection_usable() -> None:
    async def test() -> None:
        state = ServerState()
        config = uvicorn.Config(
            EarlyAnswerApp(), http=HttpProtocol, log_level="warning", lifespan="off"
        )
        protocol = HttpProtocol(config, state, {})
        transport = Transport()
        protocol.connection_made(transport)
        first = request("/first", b"0123456789")
        protocol.data_received(first[:-6])  # the head and part of the body
        await asyncio.gather(*state.tasks)
        assert transport.written.count(b"401") == 1
        protocol.data_received(first[-6:])  # the rest of the body, after the answer
        assert protocol.cycle is None  # forgotten now that it has all arrived
        protocol.data_received(request("/second"))
        await asyncio.gather(*state.tasks)
        assert transport.written.count(b"HTTP/1.1 401") == 2
        assert b"400" not in transport.written
        assert not transport.closed

    asyncio.run(test())


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 12x\r\n\r\n", "Content-Length"),
        (b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (
            b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "Content-Length",
        ),
        (b"GET / HTTP/1.1\r\nHo st: test\r\n\r\n", "header"),
    ],
)
def test_a_request_the_parser_refuses_gets_a_400_problem_document(head: bytes, reason: str) -> None:
    async def test(server: uvicorn.Server, reader: Any, writer: Any) -> None:
        writer.write(head)
        answer = await reader.read()  # the coordinator closes the connection
        status_line, rest = answer.split(b"\r\n", 1)
        headers, body = rest.split(b"\r\n\r\n", 1)
        assert status_line == b"HTTP/1.1 400 Bad Request"
        fields = dict(line.lower().split(b": ", 1) for line in headers.split(b"\r\n"))
        assert fields[b"content-type"] == b"application/problem+json"
        assert fields[b"connection"] == b"close"
        assert int(fields[b"content-length"]) == len(body)
        problem = json.loads(body)
        assert {k: problem[k] for k in ("type", "title", "status")} == {
            "type": "about:blank",
            "title": "Bad request",
            "status": 400,
        }
        assert problem["detail"].startswith("the request is not valid HTTP/1.1: ")
        assert reason.lower() in problem["detail"].lower()

    asyncio.run(with_server(test))
