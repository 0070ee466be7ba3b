"""The frame decoder and request validator: strict, and nothing crashes them."""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inboxlens.errors import BadRequest, ProtocolError
from inboxlens.vault import protocol

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)


def test_round_trip():
    frame = protocol.encode({"op": "get", "args": {"account_id": "a-1"}})
    length = protocol.check_length(frame[:4], 100)
    assert protocol.decode_body(frame[4:4 + length]) == {"op": "get", "args": {"account_id": "a-1"}}


def test_encode_refuses_oversized_frames():
    with pytest.raises(ProtocolError):
        protocol.encode({"x": "y" * 2000}, max_bytes=1024)


@pytest.mark.parametrize("message", [
    {"op": "get"}, {"args": {}}, {"op": "get", "args": {"account_id": "a"}, "id": 1},
    {"op": "get", "args": {}}, {"op": "get", "args": {"account_id": "a", "x": 1}},
    {"op": "get", "args": {"account_id": ""}}, {"op": "get", "args": {"account_id": "a/../b"}},
    {"op": "get", "args": {"account_id": "a" * 129}}, {"op": "get", "args": []},
    {"op": 3, "args": {}}, {"op": "__init__", "args": {}}, {"op": "answer_get", "args": {}},
    {"op": "set", "args": {"account_id": "a", "provider": "Google", "sealed": "AAAA"}},
    {"op": "set", "args": {"account_id": "a", "provider": "g", "sealed": "not base64!"}},
    {"op": "set", "args": {"account_id": "a", "provider": "g", "sealed": "A" * 20000}},
    {"op": "rewrap", "args": {"limit": 0}}, {"op": "rewrap", "args": {"limit": True}},
    {"op": "rewrap", "args": {"limit": 1001}}, {"op": "revoke", "args": {"key_id": "1"}},
    {"op": "forget", "args": {"account_id": "a"}}, {"op": "forget", "args": {"account_id": "a", "revoke": 1}},
    [], "get", None,
])
def test_malformed_requests_are_refused(message):
    with pytest.raises(BadRequest):
        protocol.parse_request(message)


def test_well_formed_requests_are_checked_and_converted():
    op, args = protocol.parse_request({"op": "set", "args": {
        "account_id": "acct:42@example.test", "provider": "google", "sealed": base64.b64encode(b"\x01abc").decode()}})
    assert (op, args["sealed"]) == ("set", b"\x01abc")
    assert protocol.parse_request({"op": "rewrap", "args": {"limit": 1000}}) == ("rewrap", {"limit": 1000})


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_decoder_never_fails_other_than_protocol_error(body):
    try:
        message = protocol.decode_body(body)
    except ProtocolError:
        return
    assert isinstance(message, dict)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_validator_never_fails_other_than_bad_request(message):
    try:
        op, args = protocol.parse_request(message)
    except BadRequest:
        return
    assert op in protocol.REQUESTS and set(args) == set(protocol.REQUESTS[op])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(protocol.REQUESTS)), st.dictionaries(st.text(max_size=12), json_values, max_size=4))
def test_validator_on_known_ops_with_random_args(op, args):
    try:
        protocol.parse_request({"op": op, "args": args})
    except BadRequest:
        pass


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
