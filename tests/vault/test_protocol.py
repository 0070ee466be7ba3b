"""The frame decoder and the request envelope: strict, and nothing crashes them."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inboxlens.errors import BadRequest, ProtocolError
from inboxlens.vault import protocol

def test_round_trip():
    frame = protocol.encode({"op": "get", "args": {"account_id": "a-1"}})
    length = protocol.check_length(frame[:4], 100)
    assert protocol.decode_body(frame[4:4 + length]) == {"op": "get", "args": {"account_id": "a-1"}}


def test_encode_refuses_oversized_frames():
    with pytest.raises(ProtocolError):
        protocol.encode({"x": "y" * 2000}, max_bytes=1024)


@pytest.mark.parametrize("message", [
    {"op": "get", "args": {}, "timeout": 5}, {"id": 1, "op": "get", "args": {}},
    {"id": 1, "op": "get", "args": {}, "timeout": 5, "x": 1}, {"id": "1", "op": "get", "args": {}, "timeout": 5},
    {"id": True, "op": "get", "args": {}, "timeout": 5}, {"id": -1, "op": "get", "args": {}, "timeout": 5},
    {"id": 2**60, "op": "get", "args": {}, "timeout": 5}, {"id": 1, "op": "get", "args": {}, "timeout": 0},
    {"id": 1, "op": "get", "args": {}, "timeout": 601}, {"id": 1, "op": "get", "args": {}, "timeout": "5"},
    {"id": 1, "op": "get", "args": {}, "timeout": True},
])
def test_malformed_envelopes_are_refused(message):
    with pytest.raises(BadRequest):
        protocol.check_envelope(message)


def test_a_well_formed_envelope_gives_its_timeout_and_id():
    message = protocol.request(7, "get", {"account_id": "a"}, 2.5)
    assert protocol.check_envelope(message) == 2.5
    assert protocol.request_id(message) == 7
    assert protocol.request_id({"id": "7"}) is None  # a refusal then names no request
    assert protocol.ok(7, {})["id"] == 7 and protocol.error(None, "bad_request", "x")["id"] is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_decoder_never_fails_other_than_protocol_error(body):
    try:
        message = protocol.decode_body(body)
    except ProtocolError:
        return
    assert isinstance(message, dict)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_stream_reader_on_random_bytes(data):
    async def read_all() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        while True:
            try:
                if await protocol.read_frame(reader, 1024, 1.0, 1.0) is None:
                    return
            except ProtocolError:
                return
    asyncio.run(read_all())


async def test_slow_frame_times_out_and_idle_connection_closes_quietly():
    reader = asyncio.StreamReader()
    reader.feed_data(struct.pack(">I", 10) + b"{")
    with pytest.raises(ProtocolError, match="timed out"):
        await protocol.read_frame(reader, 1024, idle_timeout=1.0, frame_timeout=0.05)
    assert await protocol.read_frame(asyncio.StreamReader(), 1024, idle_timeout=0.05, frame_timeout=1.0) is None


async def test_truncated_and_oversized_frames():
    reader = asyncio.StreamReader()
    reader.feed_data(struct.pack(">I", 10) + b'{"a"')
    reader.feed_eof()
    with pytest.raises(ProtocolError, match="truncated"):
        await protocol.read_frame(reader, 1024, 1.0, 1.0)
    reader = asyncio.StreamReader()
    reader.feed_data(struct.pack(">I", 2048) + json.dumps({"a": 1}).encode())
    with pytest.raises(ProtocolError, match="outside"):
        await protocol.read_frame(reader, 1024, 1.0, 1.0)
